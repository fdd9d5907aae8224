package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Graph is what l2gflow reads of an ONNX model: its convolutions in graph
// order, each with its weights and the batch normalisation that follows
// it, if any. The graph itself is not run.
type Graph struct {
	Convs []Conv
	// Unused lists initializers no convolution or batch normalisation
	// reads (for a ResNet export: the final fully connected layer).
	Unused []string
}

// Conv is one Conv node.
type Conv struct {
	Node string // node name, e.g. "/layer1/layer1.0/conv1/Conv"
	// Module is the PyTorch module path recovered from the node name
	// ("layer1.0.conv1"), or "" when the name carries none.
	Module    string
	Weight    Tensor  // [out, in/group, kh, kw]
	Bias      *Tensor // nil without bias (an export folds BatchNorm into it)
	Strides   []int
	Dilations []int
	Pads      []int
	Group     int
	BN        *BatchNorm // a BatchNormalization reading this output, if any
}

// BatchNorm is one BatchNormalization node in inference form.
type BatchNorm struct {
	Scale, Bias, Mean, Var Tensor
	Epsilon                float32
}

// ONNX TensorProto data types read here.
const onnxFloat, onnxDouble, onnxFloat16, onnxBFloat16, onnxInt64, onnxInt32 = 1, 11, 10, 16, 7, 6

// ReadONNX reads the convolutions of an ONNX model.
//
// Written on protowire rather than the ONNX Go modules: those (onnx-gomlx,
// onnx-go, gonnx) build or run the whole graph and pull in large
// dependency trees, while l2gflow needs only the initializers and the
// Conv / BatchNormalization / Identity / Constant nodes, a few stable
// fields of onnx.proto3.
func ReadONNX(data []byte) (*Graph, error) {
	var graphBytes []byte
	err := eachField(data, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == 7 && typ == protowire.BytesType { // ModelProto.graph
			graphBytes = v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: onnx model: %v", ErrFormat, err)
	}
	if graphBytes == nil {
		return nil, fmt.Errorf("%w: onnx model has no graph", ErrFormat)
	}
	values := map[string]Tensor{}
	var inits []string
	var nodes []onnxNode
	err = eachField(graphBytes, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // node
			n, err := parseNode(v)
			if err != nil {
				return err
			}
			nodes = append(nodes, n)
		case 5: // initializer
			name, t, err := parseTensor(v)
			if err != nil {
				return fmt.Errorf("initializer %q: %w", name, err)
			}
			values[name] = t
			inits = append(inits, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: onnx graph: %v", ErrFormat, err)
	}
	// Identity nodes alias values (exports deduplicate equal tensors
	// through them); Constant nodes hold tensors like initializers.
	alias := map[string]string{}
	for _, n := range nodes {
		switch {
		case n.op == "Identity" && len(n.inputs) == 1 && len(n.outputs) == 1:
			alias[n.outputs[0]] = n.inputs[0]
		case n.op == "Constant" && n.value != nil && len(n.outputs) == 1:
			values[n.outputs[0]] = *n.value
		}
	}
	used := map[string]bool{}
	lookup := func(name string) (Tensor, bool) {
		for range 64 {
			if t, ok := values[name]; ok {
				used[name] = true
				return t, true
			}
			next, ok := alias[name]
			if !ok {
				break
			}
			name = next
		}
		return Tensor{}, false
	}
	consumers := map[string][]int{}
	for i, n := range nodes {
		for _, in := range n.inputs {
			consumers[in] = append(consumers[in], i)
		}
	}
	g := &Graph{}
	for _, n := range nodes {
		if n.op != "Conv" {
			continue
		}
		if len(n.inputs) < 2 || len(n.outputs) < 1 {
			return nil, fmt.Errorf("%w: onnx Conv %q has %d inputs", ErrFormat, n.name, len(n.inputs))
		}
		w, ok := lookup(n.inputs[1])
		if !ok {
			return nil, fmt.Errorf("%w: onnx Conv %q: weights %q are not a constant of the file", ErrFormat, n.name, n.inputs[1])
		}
		c := Conv{Node: n.name, Module: modulePath(n.name), Weight: w, Group: 1,
			Strides: n.ints["strides"], Dilations: n.ints["dilations"], Pads: n.ints["pads"]}
		if gr, ok := n.ints["group"]; ok && len(gr) == 1 {
			c.Group = gr[0]
		}
		if len(n.inputs) > 2 && n.inputs[2] != "" {
			b, ok := lookup(n.inputs[2])
			if !ok {
				return nil, fmt.Errorf("%w: onnx Conv %q: bias %q is not a constant of the file", ErrFormat, n.name, n.inputs[2])
			}
			c.Bias = &b
		}
		for _, k := range consumers[n.outputs[0]] {
			bn := nodes[k]
			if bn.op != "BatchNormalization" || len(bn.inputs) < 5 {
				continue
			}
			var ts [4]Tensor
			for j := range ts {
				t, ok := lookup(bn.inputs[1+j])
				if !ok {
					return nil, fmt.Errorf("%w: onnx BatchNormalization %q: input %q is not a constant of the file", ErrFormat, bn.name, bn.inputs[1+j])
				}
				ts[j] = t
			}
			eps := float32(1e-5) // the ONNX default
			if e, ok := bn.floats["epsilon"]; ok {
				eps = e
			}
			c.BN = &BatchNorm{Scale: ts[0], Bias: ts[1], Mean: ts[2], Var: ts[3], Epsilon: eps}
			break
		}
		g.Convs = append(g.Convs, c)
	}
	for _, name := range inits {
		if !used[name] {
			g.Unused = append(g.Unused, name)
		}
	}
	if len(g.Convs) == 0 {
		return nil, fmt.Errorf("%w: onnx graph has no Conv node", ErrFormat)
	}
	return g, nil
}

// modulePath recovers a PyTorch module path from an exported node name:
// "/layer2/layer2.0/downsample/downsample.0/Conv" is module
// "layer2.0.downsample.0". Each scope segment names a child of the previous
// one, either plainly ("conv1") or prefixed by its parent's own segment
// when the parent is a container ("layer2.0", "downsample.0").
func modulePath(node string) string {
	segs := strings.Split(strings.Trim(node, "/"), "/")
	if len(segs) < 2 || !strings.HasPrefix(node, "/") {
		return ""
	}
	segs = segs[:len(segs)-1] // the op's own name
	full, last := "", ""
	for _, s := range segs {
		switch {
		case full == "":
			full = s
		case strings.HasPrefix(s, last+"."):
			full += s[len(last):]
		default:
			full += "." + s
		}
		last = s
	}
	return full
}

type onnxNode struct {
	name, op        string
	inputs, outputs []string
	ints            map[string][]int
	floats          map[string]float32
	value           *Tensor // a Constant's value
}

func parseNode(b []byte) (onnxNode, error) {
	n := onnxNode{ints: map[string][]int{}, floats: map[string]float32{}}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			n.inputs = append(n.inputs, string(v))
		case 2:
			n.outputs = append(n.outputs, string(v))
		case 3:
			n.name = string(v)
		case 4:
			n.op = string(v)
		case 5:
			return parseAttribute(v, &n)
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("node %q: %w", n.name, err)
	}
	return n, nil
}

// parseAttribute keeps the int, ints, float and tensor attributes.
func parseAttribute(b []byte, n *onnxNode) error {
	var name string
	var ints []int
	var f *float32
	var t *Tensor
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			name = string(v)
		case num == 2 && typ == protowire.Fixed32Type:
			fv := math.Float32frombits(uint32(x))
			f = &fv
		case num == 3 && typ == protowire.VarintType:
			ints = append(ints, int(int64(x)))
		case num == 5 && typ == protowire.BytesType:
			_, tv, err := parseTensor(v)
			if err != nil {
				return err
			}
			t = &tv
		case num == 8 && typ == protowire.VarintType:
			ints = append(ints, int(int64(x)))
		case num == 8 && typ == protowire.BytesType:
			for len(v) > 0 {
				x, k := protowire.ConsumeVarint(v)
				if k < 0 {
					return protowire.ParseError(k)
				}
				ints = append(ints, int(int64(x)))
				v = v[k:]
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("attribute %q: %w", name, err)
	}
	if ints != nil {
		n.ints[name] = ints
	}
	if f != nil {
		n.floats[name] = *f
	}
	if t != nil && name == "value" {
		n.value = t
	}
	return nil
}

// parseTensor reads a TensorProto of a floating-point or integer type,
// from raw_data or the typed repeated fields.
func parseTensor(b []byte) (string, Tensor, error) {
	var name string
	var dims []int
	dtype := 0
	var raw []byte
	var floats []float32
	var ints []int64
	var doubles []float64
	external := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return appendVarints(typ, v, x, func(u uint64) { dims = append(dims, int(int64(u))) })
		case 2:
			dtype = int(x)
		case 4:
			return appendFixed32(typ, v, x, func(u uint32) { floats = append(floats, math.Float32frombits(u)) })
		case 5, 7:
			return appendVarints(typ, v, x, func(u uint64) { ints = append(ints, int64(u)) })
		case 8:
			name = string(v)
		case 9:
			raw = v
		case 10:
			return appendFixed64(typ, v, x, func(u uint64) { doubles = append(doubles, math.Float64frombits(u)) })
		case 14:
			external = x == 1
		}
		return nil
	})
	if err != nil {
		return name, Tensor{}, err
	}
	if external {
		return name, Tensor{}, fmt.Errorf("weights stored outside the file (external data) are not read; export with the weights inside (models under 2 GB)")
	}
	for _, d := range dims {
		if d < 0 || d > math.MaxInt32 {
			return name, Tensor{}, fmt.Errorf("bad shape %v", dims)
		}
	}
	count := uint64(1)
	for _, d := range dims {
		count *= uint64(d)
		if count > math.MaxInt32 {
			return name, Tensor{}, fmt.Errorf("shape %v too large", dims)
		}
	}
	t := Tensor{Shape: dims}
	if raw != nil {
		st, ok := map[int]string{onnxFloat: "F32", onnxDouble: "F64", onnxFloat16: "F16", onnxBFloat16: "BF16", onnxInt64: "I64", onnxInt32: "I32"}[dtype]
		if !ok {
			return name, Tensor{}, fmt.Errorf("unsupported data type %d", dtype)
		}
		if uint64(len(raw)) != count*uint64(dtypeWidth[st]) {
			return name, Tensor{}, fmt.Errorf("%d raw bytes for shape %v of type %s", len(raw), dims, st)
		}
		vals, err := decodeFloats(st, raw)
		if err != nil {
			return name, Tensor{}, err
		}
		t.Data = vals
		return name, t, nil
	}
	switch {
	case floats != nil:
		t.Data = floats
	case doubles != nil:
		for _, v := range doubles {
			t.Data = append(t.Data, float32(v))
		}
	case ints != nil:
		for _, v := range ints {
			t.Data = append(t.Data, float32(v))
		}
	}
	if dtype == onnxFloat16 || dtype == onnxBFloat16 {
		// Typed half values travel as int32_data bit patterns.
		for i, v := range ints {
			if dtype == onnxFloat16 {
				t.Data[i] = halfToFloat(uint16(v))
			} else {
				t.Data[i] = math.Float32frombits(uint32(v) << 16)
			}
		}
	}
	if uint64(len(t.Data)) != count {
		return name, Tensor{}, fmt.Errorf("%d values for shape %v", len(t.Data), dims)
	}
	return name, t, nil
}

// eachField calls fn for every field of a protocol buffer message: v holds
// a length-delimited field's bytes, x a scalar's value.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// appendVarints reads a repeated varint field, packed or not.
func appendVarints(typ protowire.Type, v []byte, x uint64, add func(uint64)) error {
	if typ == protowire.VarintType {
		add(x)
		return nil
	}
	for len(v) > 0 {
		u, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return protowire.ParseError(n)
		}
		add(u)
		v = v[n:]
	}
	return nil
}

// appendFixed32 reads a repeated 32-bit field, packed or not.
func appendFixed32(typ protowire.Type, v []byte, x uint64, add func(uint32)) error {
	if typ == protowire.Fixed32Type {
		add(uint32(x))
		return nil
	}
	if len(v)%4 != 0 {
		return fmt.Errorf("packed float field of %d bytes", len(v))
	}
	for i := 0; i < len(v); i += 4 {
		add(binary.LittleEndian.Uint32(v[i:]))
	}
	return nil
}

// appendFixed64 reads a repeated 64-bit field, packed or not.
func appendFixed64(typ protowire.Type, v []byte, x uint64, add func(uint64)) error {
	if typ == protowire.Fixed64Type {
		add(x)
		return nil
	}
	if len(v)%8 != 0 {
		return fmt.Errorf("packed double field of %d bytes", len(v))
	}
	for i := 0; i < len(v); i += 8 {
		add(binary.LittleEndian.Uint64(v[i:]))
	}
	return nil
}
