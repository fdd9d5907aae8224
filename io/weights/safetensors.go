package weights

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
)

// maxHeader bounds a safetensors header (the reference implementation
// refuses headers above 100 MB).
const maxHeader = 100 << 20

// ReadSafetensors reads every tensor of a safetensors file and converts it
// to float32.
//
// Written with the standard library: the format is an 8-byte little-endian
// header size, a JSON header mapping names to dtype, shape and byte range,
// then the raw little-endian data. The one Go module served for it adds
// nothing over encoding/json, and reading untrusted files wants the strict
// checks below (ranges inside the file, sizes matching shapes, no overlap).
func ReadSafetensors(data []byte) (map[string]Tensor, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%w: safetensors: %d bytes, shorter than its header size", ErrFormat, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxHeader || n > uint64(len(data)-8) {
		return nil, fmt.Errorf("%w: safetensors: header of %d bytes in a file of %d", ErrFormat, n, len(data))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		return nil, fmt.Errorf("%w: safetensors header: %v", ErrFormat, err)
	}
	body := data[8+n:]
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int    `json:"shape"`
		Offsets []uint64 `json:"data_offsets"`
	}
	type span struct {
		name       string
		start, end uint64
	}
	var spans []span
	out := make(map[string]Tensor, len(header))
	for name, raw := range header {
		if name == "__metadata__" {
			continue
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("%w: safetensors tensor %q: %v", ErrFormat, name, err)
		}
		width, ok := dtypeWidth[e.DType]
		if !ok {
			return nil, fmt.Errorf("%w: safetensors tensor %q: unsupported dtype %q", ErrFormat, name, e.DType)
		}
		if len(e.Offsets) != 2 || e.Offsets[0] > e.Offsets[1] || e.Offsets[1] > uint64(len(body)) {
			return nil, fmt.Errorf("%w: safetensors tensor %q: byte range %v outside the %d data bytes", ErrFormat, name, e.Offsets, len(body))
		}
		count := uint64(1)
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && count > math.MaxInt32/uint64(d)) {
				return nil, fmt.Errorf("%w: safetensors tensor %q: bad shape %v", ErrFormat, name, e.Shape)
			}
			count *= uint64(d)
		}
		if got := e.Offsets[1] - e.Offsets[0]; got != count*uint64(width) {
			return nil, fmt.Errorf("%w: safetensors tensor %q: %d bytes for shape %v of %s", ErrFormat, name, got, e.Shape, e.DType)
		}
		vals, err := decodeFloats(e.DType, body[e.Offsets[0]:e.Offsets[1]])
		if err != nil {
			return nil, fmt.Errorf("%w: safetensors tensor %q: %v", ErrFormat, name, err)
		}
		spans = append(spans, span{name, e.Offsets[0], e.Offsets[1]})
		out[name] = Tensor{Shape: slices.Clone(e.Shape), Data: vals}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return nil, fmt.Errorf("%w: safetensors tensors %q and %q overlap", ErrFormat, spans[i-1].name, spans[i].name)
		}
	}
	return out, nil
}

// dtypeWidth is the byte width of the safetensors dtypes read here.
var dtypeWidth = map[string]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}

// decodeFloats converts little-endian values of a safetensors dtype.
func decodeFloats(dtype string, b []byte) ([]float32, error) {
	w := dtypeWidth[dtype]
	out := make([]float32, len(b)/w)
	le := binary.LittleEndian
	for i := range out {
		p := b[i*w:]
		switch dtype {
		case "F64":
			out[i] = float32(math.Float64frombits(le.Uint64(p)))
		case "F32":
			out[i] = math.Float32frombits(le.Uint32(p))
		case "F16":
			out[i] = halfToFloat(le.Uint16(p))
		case "BF16":
			out[i] = math.Float32frombits(uint32(le.Uint16(p)) << 16)
		case "I64":
			out[i] = float32(int64(le.Uint64(p)))
		case "I32":
			out[i] = float32(int32(le.Uint32(p)))
		case "I16":
			out[i] = float32(int16(le.Uint16(p)))
		case "I8":
			out[i] = float32(int8(p[0]))
		case "U8", "BOOL":
			out[i] = float32(p[0])
		default:
			return nil, fmt.Errorf("unsupported dtype %q", dtype)
		}
	}
	return out, nil
}

// halfToFloat converts an IEEE 754 binary16 value.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: frac * 2^-24
		v := float32(frac) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}
