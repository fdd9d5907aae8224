package artifact

import (
	"testing"
	"time"
)

func FuzzDecode(f *testing.F) {
	m := &Manifest{Kind: KindModel, Created: time.Unix(0, 0).UTC(), Classes: []string{"a", "b"}}
	good, err := Marshal(m, []Tensor{{Name: "w", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}}, {Name: "b", Shape: []int{1}, Data: []float32{-1}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(Magic))
	f.Add([]byte("L2GFLOW\x09"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, ts, err := Decode(data)
		if err != nil {
			return
		}
		if m.FormatVersion != FormatVersion || len(ts) != len(m.Tensors) {
			t.Fatalf("accepted manifest %+v with %d tensors", m, len(ts))
		}
		for _, x := range ts {
			n := 1
			for _, d := range x.Shape {
				n *= d
			}
			if n != len(x.Data) {
				t.Fatalf("tensor %s: shape %v, %d values", x.Name, x.Shape, len(x.Data))
			}
		}
	})
}
