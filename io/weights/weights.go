// Package weights reads pretrained network weights exported from other
// frameworks: safetensors files (PyTorch state dicts) and the initializers
// of ONNX models. It only reads tensors; mapping them onto l2gflow's
// networks is the model package's job.
package weights

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/l2gflow/l2gflow/io/storage"
)

// MaxFileBytes bounds a weights file: a ResNet-152 in float32 is about
// 240 MB; anything far larger is not a backbone this project can use.
const MaxFileBytes = 2 << 30

// ErrFormat is returned (wrapped) for a file that is not a readable
// safetensors or ONNX file.
var ErrFormat = errors.New("unreadable weights file")

// Tensor is a dense array converted to float32, row-major in the file's
// own layout (PyTorch's OIHW for convolutions).
type Tensor struct {
	Shape []int
	Data  []float32
}

// Size is the number of elements of a shape.
func Size(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Format names a weights file format.
type Format string

// Formats read by this package.
const (
	Safetensors Format = "safetensors"
	ONNX        Format = "onnx"
)

// File is a read weights file.
type File struct {
	URI    string
	Name   string // base name of URI
	SHA256 string // of the file's bytes
	Format Format
	// Tensors by name. For safetensors these are the file's names
	// (torchvision: "layer1.0.conv1.weight"); ONNX files are described by
	// Graph instead.
	Tensors map[string]Tensor
	// Graph is the convolution structure of an ONNX file.
	Graph *Graph
}

// Open reads a weights file (local path or gs:// URI) and detects its
// format from its contents.
func Open(ctx context.Context, st *storage.Store, uri string) (*File, error) {
	data, err := st.ReadFile(ctx, uri, MaxFileBytes)
	if err != nil {
		return nil, fmt.Errorf("read weights: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", uri, err)
	}
	f.URI, f.Name = uri, path.Base(strings.TrimSuffix(uri, "/"))
	return f, nil
}

// Parse reads a weights file from memory, telling the format by its first
// bytes: safetensors begins with a little-endian header size followed by
// '{'; an ONNX model is a protocol buffer whose first field is ir_version.
func Parse(data []byte) (*File, error) {
	sum := sha256.Sum256(data)
	f := &File{SHA256: hex.EncodeToString(sum[:])}
	switch {
	case len(data) >= 9 && data[8] == '{':
		ts, err := ReadSafetensors(data)
		if err != nil {
			return nil, err
		}
		f.Format, f.Tensors = Safetensors, ts
	case len(data) > 0 && data[0] == 0x08: // field 1 (ir_version), varint
		g, err := ReadONNX(data)
		if err != nil {
			return nil, err
		}
		f.Format, f.Graph = ONNX, g
	default:
		head := data[:min(len(data), 8)]
		return nil, fmt.Errorf("%w: neither safetensors nor ONNX (starts with % x)", ErrFormat, bytes.TrimSpace(head))
	}
	return f, nil
}
