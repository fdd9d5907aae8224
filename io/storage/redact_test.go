package storage_test

import (
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/storage"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		in, want string
		secrets  []string
	}{
		{"open gs://bucket/a.jpg: file does not exist", "open gs://bucket/a.jpg: file does not exist", nil},
		{`read https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=svc%40p.iam&X-Goog-Signature=abcdef0123: 403`,
			`read https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=REDACTED&X-Goog-Signature=REDACTED: 403`,
			[]string{"abcdef0123", "svc%40p.iam"}},
		{"fetch https://user:hunter2@example.com/x.png failed", "fetch https://REDACTED@example.com/x.png failed", []string{"hunter2", "user:"}},
		{"s3://b/k?X-Amz-Signature=deadbeef&x=1#frag", "s3://b/k?X-Amz-Signature=REDACTED&x=1#frag", []string{"deadbeef"}},
		{"url http://h/p?access_token=ya29.secret&key=AIzaXYZ&sig=s1", "url http://h/p?access_token=REDACTED&key=REDACTED&sig=REDACTED", []string{"ya29", "AIza", "s1"}},
		{"Authorization: Bearer ya29.a0AfH6SMBxyz", "Authorization: Bearer REDACTED", []string{"ya29"}},
	}
	for _, tc := range tests {
		got := storage.Redact(tc.in)
		if got != tc.want {
			t.Errorf("Redact(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
		for _, s := range tc.secrets {
			if strings.Contains(got, s) {
				t.Errorf("Redact(%q) keeps %q", tc.in, s)
			}
		}
	}
}
