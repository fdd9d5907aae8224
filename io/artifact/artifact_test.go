package artifact

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func sample() (*Manifest, []Tensor) {
	m := &Manifest{Kind: KindModel, Created: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), Producer: "test",
		Method: "l2g", Classes: []string{"a", "b"},
		Networks: map[string]json.RawMessage{"global": json.RawMessage(`{"name":"tiny"}`)},
		Input:    Input{Size: 128, Mean: []float64{0.5, 0.5, 0.5}, Std: []float64{0.25, 0.25, 0.25}},
		Metrics:  Metrics{Steps: 3, FinalLosses: map[string]float64{"cls": 0.5}}}
	ts := []Tensor{
		{Name: "global/w", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "global/b", Shape: []int{1}, Data: []float32{-0.5}},
	}
	return m, ts
}

func TestRoundTrip(t *testing.T) {
	m, ts := sample()
	data, err := Marshal(m, ts)
	if err != nil {
		t.Fatal(err)
	}
	got, gotT, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotT, ts) {
		t.Errorf("tensors: got %+v want %+v", gotT, ts)
	}
	if got.Method != "l2g" || !reflect.DeepEqual(got.Classes, m.Classes) || got.FormatVersion != FormatVersion ||
		got.WeightsSHA256 == "" || string(got.Networks["global"]) != `{"name":"tiny"}` || got.Metrics.FinalLosses["cls"] != 0.5 {
		t.Errorf("manifest round trip: %+v", got)
	}
}

func TestCorruptionDetected(t *testing.T) {
	m, ts := sample()
	good, err := Marshal(m, ts)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x40
		return b
	}
	m2, _ := sample()
	m2.FormatVersion = FormatVersion + 1
	future, _ := Marshal(m2, ts)
	layout := append([]byte(nil), good...)
	layout[7] = 2
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"not an artifact", []byte("PK\x03\x04 a zip file"), ErrCorrupt},
		{"truncated to the magic", good[:len(Magic)], ErrCorrupt},
		{"truncated in the middle", good[:len(good)/2], ErrCorrupt},
		{"truncated by one byte", good[:len(good)-1], ErrCorrupt},
		{"byte flipped in the body", flip(len(good) / 2), ErrCorrupt},
		{"byte flipped near the end", flip(len(good) - 3), ErrCorrupt},
		{"newer format version", future, ErrIncompatible},
		{"other file layout", layout, ErrIncompatible},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Decode(tc.data)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeRejectsBadTensors(t *testing.T) {
	m, _ := sample()
	if _, err := Marshal(m, []Tensor{{Name: "x", Shape: []int{2}, Data: []float32{1}}}); err == nil {
		t.Error("shape/data mismatch: want an error")
	}
	if _, err := Marshal(m, []Tensor{{Name: "x", Shape: []int{1}, Data: []float32{1}}, {Name: "x", Shape: []int{1}, Data: []float32{1}}}); err == nil {
		t.Error("duplicate name: want an error")
	}
}

// TestViewSize reads the local view size from the manifest's input, and
// from the training configuration in artifacts written before the input
// recorded it.
func TestViewSize(t *testing.T) {
	tests := []struct {
		name string
		m    Manifest
		want int
	}{
		{"recorded", Manifest{Input: Input{Size: 128, ViewSize: 96}, Training: json.RawMessage(`{"ImageSize":128,"ViewSize":64}`)}, 96},
		{"earlier artifact", Manifest{Input: Input{Size: 128}, Training: json.RawMessage(`{"ImageSize":128,"ViewSize":64}`)}, 64},
		{"no training configuration", Manifest{Input: Input{Size: 128}}, 0},
	}
	for _, tc := range tests {
		if got := tc.m.ViewSize(); got != tc.want {
			t.Errorf("%s: view size %d, want %d", tc.name, got, tc.want)
		}
	}
}
