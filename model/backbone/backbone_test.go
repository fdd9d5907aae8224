package backbone

import (
	"slices"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, name := range Names() {
		p, err := Lookup(name)
		if err != nil || p.Name != name || len(p.Depths) == 0 || len(p.Depths) != len(p.Widths) {
			t.Errorf("%s: %+v %v", name, p, err)
		}
		p.Depths[0] = 99 // a copy: the table is not changed
	}
	if p, _ := Lookup(Names()[0]); p.Depths[0] == 99 {
		t.Error("Lookup returned the table's own slice")
	}
	_, err := Lookup("resnet101")
	if err == nil || !strings.Contains(err.Error(), Choices(Names())) {
		t.Errorf("unknown preset: %v", err)
	}
	if !slices.Contains(Names(), Default) {
		t.Errorf("default %q is not a preset", Default)
	}
	if slices.Contains(Pretrainable(), "tiny") || !slices.Contains(Pretrainable(), "resnet50") {
		t.Errorf("pretrainable: %v", Pretrainable())
	}
}

func TestChoices(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{{nil, ""}, {[]string{"a"}, "a"}, {[]string{"a", "b"}, "a or b"}, {[]string{"a", "b", "c"}, "a, b or c"}} {
		if got := Choices(tc.in); got != tc.want {
			t.Errorf("Choices(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
