package trainer

import (
	"fmt"
	"strings"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/weights"
	"github.com/l2gflow/l2gflow/model"
)

// loadPretrained starts both networks from a pretrained weights file and
// describes the file for the artifact.
func loadPretrained(f *weights.File, strict bool, params *model.Params, global, local *model.Net, logf func(string, ...any)) (*artifact.Pretrained, error) {
	// Networks of one architecture take the file mapped once.
	nets, prefixes := []*model.Net{global}, [][]string{{model.GlobalPrefix}}
	switch {
	case local == nil: // the cam method has no local network
	case local.Arch.Name == global.Arch.Name:
		prefixes[0] = append(prefixes[0], model.LocalPrefix)
	default:
		nets, prefixes = append(nets, local), append(prefixes, []string{model.LocalPrefix})
	}
	var rep *model.ImportReport
	var loaded []string
	for i, net := range nets {
		r, err := net.LoadPretrained(params, f, strict, prefixes[i]...)
		if err != nil {
			return nil, fmt.Errorf("pretrained, %s network: %w", netNames(prefixes[i]), err)
		}
		loaded = append(loaded, fmt.Sprintf("%d tensors into the %s network", r.Loaded, netNames(prefixes[i])))
		if rep == nil {
			rep = r
		} else {
			rep.Skipped = append(rep.Skipped, r.Skipped...)
		}
	}
	logf("pretrained %s (%s, sha256 %.12s): %s; %d ignored (%s); %d skipped",
		f.Name, f.Format, f.SHA256, strings.Join(loaded, ", "), len(rep.Ignored), ignoredDesc(rep.Ignored), len(rep.Skipped))
	for _, s := range rep.Skipped {
		logf("  skipped %s", s)
	}
	return &artifact.Pretrained{Name: f.Name, URI: f.URI, SHA256: f.SHA256, Format: string(f.Format),
		Loaded: rep.Loaded, Skipped: rep.Skipped}, nil
}

// netNames names networks by their parameter prefixes: "global and local".
func netNames(prefixes []string) string {
	names := make([]string, len(prefixes))
	for i, p := range prefixes {
		names[i] = strings.TrimSuffix(p, "/")
	}
	return strings.Join(names, " and ")
}

// ignoredDesc shortens a list of ignored tensor names for a log line.
func ignoredDesc(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:3], ", ") + ", ..."
}
