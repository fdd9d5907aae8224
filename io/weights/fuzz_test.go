package weights

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func FuzzParse(f *testing.F) {
	f.Add(safetensorsFile(map[string]any{
		"w": map[string]any{"dtype": "F32", "shape": []int{2}, "data_offsets": []int{0, 8}},
		"h": map[string]any{"dtype": "F16", "shape": []int{1}, "data_offsets": []int{8, 10}},
	}, append(f32bytes(1, 2), 0, 0x3c)))
	conv := onnxNodeBytes("/conv1/Conv", "Conv", []string{"x", "w"}, []string{"y"},
		pbBytes(pbBytes(nil, 1, []byte("strides")), 8, protowire.AppendVarint(protowire.AppendVarint(nil, 2), 2)))
	graph := pbBytes(pbBytes(nil, 1, conv), 5, onnxTensor("w", []int{1, 1, 1, 1}, []float32{3}, true))
	f.Add(pbBytes(pbVarint(nil, 1, 8), 7, graph))
	f.Add([]byte{0x08})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		check := func(name string, x Tensor) {
			if Size(x.Shape) != len(x.Data) {
				t.Fatalf("%s: shape %v with %d values", name, x.Shape, len(x.Data))
			}
		}
		for name, x := range file.Tensors {
			check(name, x)
		}
		if file.Graph != nil {
			for _, c := range file.Graph.Convs {
				check(c.Node, c.Weight)
			}
		}
	})
}
