package weights

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/storage/gcstest"
)

// safetensorsFile builds a safetensors file from a header and data.
func safetensorsFile(header map[string]any, data []byte) []byte {
	h, _ := json.Marshal(header)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

func f32bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func TestReadSafetensors(t *testing.T) {
	ok := safetensorsFile(map[string]any{
		"__metadata__": map[string]string{"format": "pt"},
		"w":            map[string]any{"dtype": "F32", "shape": []int{2, 1}, "data_offsets": []int{0, 8}},
		"h":            map[string]any{"dtype": "F16", "shape": []int{3}, "data_offsets": []int{8, 14}},
		"b":            map[string]any{"dtype": "BF16", "shape": []int{1}, "data_offsets": []int{14, 16}},
		"n":            map[string]any{"dtype": "I64", "shape": []int{}, "data_offsets": []int{16, 24}},
	}, slices.Concat(f32bytes(1.5, -2), []byte{0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00}, []byte{0x40, 0x40},
		binary.LittleEndian.AppendUint64(nil, 7)))
	ts, err := ReadSafetensors(ok)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]float32{"w": {1.5, -2}, "h": {1, -2, float32(math.Ldexp(1, -24))}, "b": {3}, "n": {7}}
	for name, w := range want {
		if !slices.Equal(ts[name].Data, w) {
			t.Errorf("%s = %v, want %v", name, ts[name].Data, w)
		}
	}
	if !slices.Equal(ts["w"].Shape, []int{2, 1}) || len(ts) != 4 {
		t.Errorf("shapes/names: %v", ts)
	}

	bad := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "shorter than its header"},
		{"header beyond file", binary.LittleEndian.AppendUint64(nil, 1000), "header of 1000 bytes"},
		{"header not JSON", append(binary.LittleEndian.AppendUint64(nil, 3), "{x}"...), "header"},
		{"range outside", safetensorsFile(map[string]any{"w": map[string]any{"dtype": "F32", "shape": []int{2}, "data_offsets": []int{0, 8}}}, f32bytes(1)), "outside"},
		{"size mismatch", safetensorsFile(map[string]any{"w": map[string]any{"dtype": "F32", "shape": []int{3}, "data_offsets": []int{0, 8}}}, f32bytes(1, 2)), "bytes for shape"},
		{"unknown dtype", safetensorsFile(map[string]any{"w": map[string]any{"dtype": "C64", "shape": []int{1}, "data_offsets": []int{0, 8}}}, f32bytes(1, 2)), "unsupported dtype"},
		{"negative dim", safetensorsFile(map[string]any{"w": map[string]any{"dtype": "F32", "shape": []int{-1}, "data_offsets": []int{0, 4}}}, f32bytes(1)), "bad shape"},
		{"huge dims", safetensorsFile(map[string]any{"w": map[string]any{"dtype": "F32", "shape": []int{1 << 20, 1 << 20, 1 << 20}, "data_offsets": []int{0, 4}}}, f32bytes(1)), "bad shape"},
		{"overlap", safetensorsFile(map[string]any{
			"a": map[string]any{"dtype": "F32", "shape": []int{2}, "data_offsets": []int{0, 8}},
			"b": map[string]any{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{4, 8}},
		}, f32bytes(1, 2)), "overlap"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSafetensors(tc.data)
			if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrFormat with %q", err, tc.want)
			}
		})
	}
}

// protobuf builders for a hand-made ONNX model.
func pbBytes(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func pbVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func onnxTensor(name string, dims []int, vals []float32, raw bool) []byte {
	var b []byte
	for _, d := range dims {
		b = pbVarint(b, 1, uint64(d))
	}
	b = pbVarint(b, 2, onnxFloat)
	b = pbBytes(b, 8, []byte(name))
	if raw {
		b = pbBytes(b, 9, f32bytes(vals...))
	} else {
		b = pbBytes(b, 4, f32bytes(vals...)) // packed float_data
	}
	return b
}

func onnxNodeBytes(name, op string, in, out []string, attrs ...[]byte) []byte {
	var b []byte
	for _, s := range in {
		b = pbBytes(b, 1, []byte(s))
	}
	for _, s := range out {
		b = pbBytes(b, 2, []byte(s))
	}
	b = pbBytes(b, 3, []byte(name))
	b = pbBytes(b, 4, []byte(op))
	for _, a := range attrs {
		b = pbBytes(b, 5, a)
	}
	return b
}

func TestReadONNX(t *testing.T) {
	var g []byte
	// Conv "/layer1/layer1.0/conv1/Conv" reads its weights through an
	// Identity; a BatchNormalization with epsilon 1e-3 follows, its scale
	// a Constant node.
	g = pbBytes(g, 1, onnxNodeBytes("id", "Identity", []string{"w0"}, []string{"w"}))
	epsAttr := protowire.AppendFixed32(protowire.AppendTag(pbBytes(nil, 1, []byte("epsilon")), 2, protowire.Fixed32Type), math.Float32bits(1e-3))
	strides := pbBytes(pbBytes(nil, 1, []byte("strides")), 8, protowire.AppendVarint(protowire.AppendVarint(nil, 2), 2))
	valueAttr := pbBytes(pbBytes(nil, 1, []byte("value")), 5, onnxTensor("", []int{1}, []float32{2}, true))
	g = pbBytes(g, 1, onnxNodeBytes("c", "Constant", nil, []string{"scale"}, valueAttr))
	g = pbBytes(g, 1, onnxNodeBytes("/layer1/layer1.0/conv1/Conv", "Conv", []string{"x", "w"}, []string{"y"}, strides))
	g = pbBytes(g, 1, onnxNodeBytes("/layer1/layer1.0/bn1/BatchNormalization", "BatchNormalization", []string{"y", "scale", "beta", "mean", "var"}, []string{"z"}, epsAttr))
	g = pbBytes(g, 5, onnxTensor("w0", []int{1, 1, 1, 2}, []float32{0.5, -1}, true))
	g = pbBytes(g, 5, onnxTensor("beta", []int{1}, []float32{0.25}, false))
	g = pbBytes(g, 5, onnxTensor("mean", []int{1}, []float32{0.1}, true))
	g = pbBytes(g, 5, onnxTensor("var", []int{1}, []float32{4}, true))
	g = pbBytes(g, 5, onnxTensor("fc.weight", []int{2}, []float32{1, 2}, true))
	model := pbBytes(pbVarint(nil, 1, 8), 7, g)

	f, err := Parse(model)
	if err != nil {
		t.Fatal(err)
	}
	if f.Format != ONNX || len(f.Graph.Convs) != 1 {
		t.Fatalf("format %s, %d convs", f.Format, len(f.Graph.Convs))
	}
	c := f.Graph.Convs[0]
	if c.Module != "layer1.0.conv1" || !slices.Equal(c.Weight.Data, []float32{0.5, -1}) || !slices.Equal(c.Strides, []int{2, 2}) || c.Bias != nil {
		t.Errorf("conv %+v", c)
	}
	if c.BN == nil || c.BN.Scale.Data[0] != 2 || c.BN.Bias.Data[0] != 0.25 || c.BN.Mean.Data[0] != 0.1 || c.BN.Var.Data[0] != 4 || c.BN.Epsilon != 1e-3 {
		t.Errorf("batch norm %+v", c.BN)
	}
	if !slices.Equal(f.Graph.Unused, []string{"fc.weight"}) {
		t.Errorf("unused %v, want [fc.weight]", f.Graph.Unused)
	}

	bad := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", model[:len(model)-7], "onnx"},
		{"no graph", pbVarint(nil, 1, 8), "no graph"},
		{"no conv", pbBytes(pbVarint(nil, 1, 8), 7, pbBytes(nil, 5, onnxTensor("a", []int{1}, []float32{1}, true))), "no Conv"},
		{"external data", pbBytes(pbVarint(nil, 1, 8), 7, pbBytes(nil, 5, pbVarint(onnxTensor("a", []int{1}, nil, false), 14, 1))), "external data"},
		{"wrong raw size", pbBytes(pbVarint(nil, 1, 8), 7, pbBytes(nil, 5, onnxTensor("a", []int{3}, []float32{1}, true))), "raw bytes"},
		{"neither format", []byte("GIF89a....."), "neither safetensors nor ONNX"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestModulePath(t *testing.T) {
	tests := map[string]string{
		"/conv1/Conv":                                   "conv1",
		"/layer1/layer1.0/conv1/Conv":                   "layer1.0.conv1",
		"/layer2/layer2.0/downsample/downsample.0/Conv": "layer2.0.downsample.0",
		"/backbone/body/layer3/layer3.5/conv2/Conv":     "backbone.body.layer3.5.conv2",
		"Conv_12": "",
		"":        "",
	}
	for node, want := range tests {
		if got := modulePath(node); got != want {
			t.Errorf("modulePath(%q) = %q, want %q", node, got, want)
		}
	}
}

func TestHalfToFloat(t *testing.T) {
	tests := []struct {
		h    uint16
		want float32
	}{{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, float32(math.Ldexp(1, -24))}, {0x8000, float32(math.Copysign(0, -1))}, {0x7c00, float32(math.Inf(1))}}
	for _, tc := range tests {
		if got := halfToFloat(tc.h); got != tc.want {
			t.Errorf("halfToFloat(%#x) = %g, want %g", tc.h, got, tc.want)
		}
	}
	if !math.IsNaN(float64(halfToFloat(0x7e00))) {
		t.Error("0x7e00 is not NaN")
	}
}

// TestOpenFromBucket reads a weights file from a gs:// URI (the GCS
// emulator) and records its name and sha256.
func TestOpenFromBucket(t *testing.T) {
	gcstest.Start(t, "w")
	data := safetensorsFile(map[string]any{"a": map[string]any{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{0, 4}}}, f32bytes(7))
	ctx := context.Background()
	st := storage.New()
	defer st.Close()
	if err := st.WriteFile(ctx, "gs://w/pretrained/r.safetensors", data); err != nil {
		t.Fatal(err)
	}
	f, err := Open(ctx, st, "gs://w/pretrained/r.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if f.Name != "r.safetensors" || f.SHA256 != hex.EncodeToString(sum[:]) || f.Tensors["a"].Data[0] != 7 {
		t.Errorf("file %+v", f)
	}
	if _, err := Open(ctx, st, "gs://w/pretrained/none.safetensors"); err == nil || !strings.Contains(err.Error(), "none.safetensors") {
		t.Errorf("missing file: %v", err)
	}
}
