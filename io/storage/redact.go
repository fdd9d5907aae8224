package storage

import (
	"regexp"
	"strings"
)

// urlPattern finds URLs in free text (error messages, log lines).
var urlPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)

// secretParam matches query parameter names that carry credentials:
// signed-URL signatures and credentials (GCS X-Goog-*, S3 X-Amz-*, Azure
// sig), tokens, API keys, passwords.
var secretParam = regexp.MustCompile(`(?i)(signature|^sig$|credential|token|^key$|api[_-]?key|password|secret|^auth)`)

// bearer matches an HTTP authorization value.
var bearer = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`)

// Redact removes credentials from text before it is logged or stored in a
// run record: the user:password part of URLs, the values of query
// parameters that carry signatures, tokens or keys (signed URLs), and
// bearer tokens. The rest of the text is kept so messages stay useful.
func Redact(s string) string {
	s = urlPattern.ReplaceAllStringFunc(s, redactURL)
	return bearer.ReplaceAllString(s, "$1 REDACTED")
}

func redactURL(u string) string {
	// Punctuation that ends a sentence or a message part is not the URL's.
	trimmed := strings.TrimRight(u, ":;,.)]")
	tail := u[len(trimmed):]
	u = trimmed
	scheme, rest, _ := strings.Cut(u, "://")
	// user:password@host
	if at := strings.Index(rest, "@"); at >= 0 {
		if slash := strings.IndexAny(rest, "/?#"); slash < 0 || at < slash {
			rest = "REDACTED@" + rest[at+1:]
		}
	}
	base, query, ok := strings.Cut(rest, "?")
	if !ok {
		return scheme + "://" + rest + tail
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	params := strings.Split(query, "&")
	for i, p := range params {
		name, _, hasValue := strings.Cut(p, "=")
		if hasValue && secretParam.MatchString(name) {
			params[i] = name + "=REDACTED"
		}
	}
	out := scheme + "://" + base + "?" + strings.Join(params, "&")
	if hasFrag {
		out += "#" + frag
	}
	return out + tail
}
