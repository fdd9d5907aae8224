// Command torchexport writes a model artifact's global network as a NumPy
// .npz file for bench/torch_label.py, the PyTorch side of the end-to-end
// labeling comparison: every parameter under its name with "/" as "." and
// without the "global/" prefix (convolution weights as [K, K, Cin, Cout],
// batch-norm scale, shift, running mean and variance as they are), and a
// "meta" entry holding the manifest's classes, input normalisation,
// architecture and calibrated threshold as JSON bytes.
//
//	go run ./bench/torchexport MODEL.l2g OUT.npz
//
// Not part of l2gflow: a tool of the comparison only. NumPy's format is
// written here by hand: it is a zip of .npy files, each a short header
// and the raw little-endian data, which no Go library in the module's
// dependencies writes.
package main

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/l2gflow/l2gflow/model"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: torchexport MODEL.l2g OUT.npz")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "torchexport:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	m, err := model.LoadModel(data)
	if err != nil {
		return fmt.Errorf("load %s: %w", in, err)
	}
	meta := map[string]any{"classes": m.Manifest.Classes, "mean": m.Manifest.Input.Mean, "std": m.Manifest.Input.Std,
		"arch": m.Net.Arch, "threshold": nil}
	if t := m.Manifest.Threshold; t != nil {
		meta["threshold"] = t.Value
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	z := zip.NewWriter(f)
	if err := writeNpy(z, "meta", "|u1", []int{len(metaJSON)}, metaJSON); err != nil {
		return err
	}
	for i, s := range m.Params.Specs {
		name := strings.ReplaceAll(strings.TrimPrefix(s.Name, model.GlobalPrefix), "/", ".")
		var raw bytes.Buffer
		if err := binary.Write(&raw, binary.LittleEndian, m.Params.Values[i]); err != nil {
			return err
		}
		if err := writeNpy(z, name, "<f4", s.Shape, raw.Bytes()); err != nil {
			return err
		}
	}
	if err := z.Close(); err != nil {
		return err
	}
	return f.Close()
}

// writeNpy adds name.npy (NumPy format 1.0) to the archive.
func writeNpy(z *zip.Writer, name, descr string, shape []int, data []byte) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, tuple)
	// Magic (6) + version (2) + length (2) + header + newline, padded to 64.
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	w, err := z.Create(name + ".npy")
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	b.WriteString(header)
	b.Write(data)
	_, err = w.Write(b.Bytes())
	return err
}
