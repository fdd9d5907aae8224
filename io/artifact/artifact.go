// Package artifact reads and writes l2gflow's versioned model files
// (model.l2g) and training checkpoints: one file holding a JSON manifest
// and named float32 tensors, zstd-compressed with a frame checksum, the
// tensor bytes also covered by a sha256 recorded in the manifest. Loading
// checks the magic, the format version, both checksums and the tensor
// index, and says which check failed.
package artifact

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Magic starts every artifact file (uncompressed, so tools can tell it).
const Magic = "L2GFLOW\x01"

// FormatVersion is the version of the layout this package writes. Readers
// refuse other versions.
const FormatVersion = 1

// Kind of artifact.
const (
	KindModel      = "model"
	KindCheckpoint = "checkpoint"
)

// maxManifest bounds the manifest line when reading.
const maxManifest = 16 << 20

// ErrCorrupt is returned (wrapped) for a damaged or truncated file.
var ErrCorrupt = errors.New("corrupt or truncated artifact")

// ErrIncompatible is returned (wrapped) for a file this version cannot use.
var ErrIncompatible = errors.New("incompatible artifact")

// Tensor is one named float32 array.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// TensorInfo indexes a tensor in the weights section.
type TensorInfo struct {
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	Offset int64  `json:"offset"` // byte offset in the weights section
}

// Input describes what the network expects.
type Input struct {
	Size int `json:"size"` // training image side
	// ViewSize is the side of the local views training cut (0 in
	// artifacts written before it was recorded here).
	ViewSize int       `json:"view_size,omitempty"`
	Mean     []float64 `json:"mean"` // per-channel mean of RGB/255
	Std      []float64 `json:"std"`  // per-channel std of RGB/255
}

// Dataset identifies the training data.
type Dataset struct {
	Source      string `json:"source"`
	Fingerprint string `json:"fingerprint"`
	Images      int    `json:"images"`
}

// Metrics summarises training.
type Metrics struct {
	Steps        int                `json:"steps"`
	Epochs       float64            `json:"epochs"`
	Images       int64              `json:"images"`
	DurationSec  float64            `json:"duration_sec"`
	ImagesPerSec float64            `json:"images_per_sec"`
	FinalLosses  map[string]float64 `json:"final_losses"`
	StoppedBy    string             `json:"stopped_by"` // steps, epochs, time_budget, interrupt
}

// Pretrained identifies the weights file a model started from.
type Pretrained struct {
	Name   string `json:"name"` // base name of the file
	URI    string `json:"uri"`
	SHA256 string `json:"sha256"`
	Format string `json:"format"` // safetensors or onnx
	// Loaded counts the parameters of each network set from the file;
	// Skipped lists what was not (non-strict loading only).
	Loaded  int      `json:"loaded"`
	Skipped []string `json:"skipped,omitempty"`
}

// Manifest describes an artifact.
type Manifest struct {
	FormatVersion int       `json:"format_version"`
	Kind          string    `json:"kind"`
	Created       time.Time `json:"created"`
	Producer      string    `json:"producer"` // l2gflow version
	Method        string    `json:"method"`   // l2g or cam
	Classes       []string  `json:"classes"`
	// Networks maps a network name ("global", "local") to its
	// architecture, as the model package encodes it.
	Networks map[string]json.RawMessage `json:"networks"`
	Input    Input                      `json:"input"`
	// Training is the effective training configuration.
	Training json.RawMessage `json:"training,omitempty"`
	Dataset  Dataset         `json:"dataset"`
	// Pretrained is the weights file training started from, if any.
	Pretrained *Pretrained `json:"pretrained,omitempty"`
	Metrics    Metrics     `json:"metrics"`
	// Resume holds a checkpoint's position (model artifacts leave it empty).
	Resume json.RawMessage `json:"resume,omitempty"`
	// Threshold is the background threshold chosen for the model's labels
	// from its training images' saliency maps (never ground truth), when
	// they have any.
	Threshold *Threshold `json:"threshold,omitempty"`
	// Reading is how labeling reads the model's maps (model.ReadNormalized
	// or model.ReadSoftmax; "" is normalized), chosen at training.
	Reading string `json:"cam_reading,omitempty"`

	WeightsSHA256 string       `json:"weights_sha256"`
	WeightsBytes  int64        `json:"weights_bytes"`
	Tensors       []TensorInfo `json:"tensors"`
}

// Threshold is a background threshold calibrated on data: the candidate
// whose foreground (a tagged class's normalised CAM above it) agrees best
// with the binarised saliency maps of Images training images.
type Threshold struct {
	Value  float64 `json:"value"`
	Images int     `json:"images"`
	// Candidates and IoU are every threshold tried and its agreement (the
	// intersection over union of the two foregrounds, over all images).
	Candidates []float64 `json:"candidates"`
	IoU        []float64 `json:"iou"`
	// Reading is the CAM reading the threshold was calibrated for ("" is
	// the normalized reading).
	Reading string `json:"reading,omitempty"`
	// Warnings say why the threshold, or the model, may not be trusted:
	// the agreement still rising at an end of the candidates, or low
	// agreement with the saliency maps at the best threshold.
	Warnings []string `json:"warnings,omitempty"`
}

// ViewSize is the side of the local views the model's training cut (in
// training pixels), read from its training configuration; 0 when the
// model was not trained with local views.
func (m *Manifest) ViewSize() int {
	if m.Input.ViewSize > 0 {
		return m.Input.ViewSize
	}
	// Artifacts of earlier versions: the training configuration's.
	var tc struct {
		ImageSize int `json:"ImageSize"`
		ViewSize  int `json:"ViewSize"`
	}
	if json.Unmarshal(m.Training, &tc) != nil || tc.ImageSize <= 0 {
		return 0
	}
	return tc.ViewSize
}

// Encode writes the artifact: the manifest's checksum and tensor index are
// filled in from tensors.
func Encode(w io.Writer, m *Manifest, tensors []Tensor) error {
	var weights bytes.Buffer
	m.Tensors = m.Tensors[:0]
	seen := map[string]bool{}
	for _, t := range tensors {
		if seen[t.Name] {
			return fmt.Errorf("artifact: duplicate tensor %q", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("artifact: tensor %s has %d values for shape %v", t.Name, len(t.Data), t.Shape)
		}
		m.Tensors = append(m.Tensors, TensorInfo{Name: t.Name, Shape: t.Shape, Offset: int64(weights.Len())})
		buf := make([]byte, 4*len(t.Data))
		for i, v := range t.Data {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		weights.Write(buf)
	}
	sum := sha256.Sum256(weights.Bytes())
	if m.FormatVersion == 0 {
		m.FormatVersion = FormatVersion
	}
	m.WeightsSHA256 = hex.EncodeToString(sum[:])
	m.WeightsBytes = int64(weights.Len())
	head, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("artifact: manifest: %w", err)
	}
	if _, err := io.WriteString(w, Magic); err != nil {
		return err
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderCRC(true), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return err
	}
	if _, err := zw.Write(append(head, '\n')); err != nil {
		zw.Close()
		return err
	}
	if _, err := zw.Write(weights.Bytes()); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// Decode reads and verifies an artifact.
func Decode(data []byte) (*Manifest, []Tensor, error) {
	if len(data) < len(Magic) || string(data[:len(Magic)]) != Magic {
		if len(data) >= len(Magic) && string(data[:7]) == Magic[:7] {
			return nil, nil, fmt.Errorf("%w: file layout %d, this l2gflow reads %d", ErrIncompatible, data[7], Magic[7])
		}
		return nil, nil, fmt.Errorf("%w: not an l2gflow artifact (bad magic)", ErrCorrupt)
	}
	zr, err := zstd.NewReader(bytes.NewReader(data[len(Magic):]), zstd.WithDecoderMaxMemory(8<<30))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer zr.Close()
	br := bufio.NewReaderSize(zr, 1<<16)
	line, err := readLine(br, maxManifest)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	var m Manifest
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, nil, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	if m.FormatVersion != FormatVersion {
		return nil, nil, fmt.Errorf("%w: format version %d, this l2gflow reads %d", ErrIncompatible, m.FormatVersion, FormatVersion)
	}
	if m.WeightsBytes < 0 || m.WeightsBytes > 1<<36 {
		return nil, nil, fmt.Errorf("%w: weights size %d", ErrCorrupt, m.WeightsBytes)
	}
	weights, err := io.ReadAll(br)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: weights: %v", ErrCorrupt, err)
	}
	if int64(len(weights)) != m.WeightsBytes {
		return nil, nil, fmt.Errorf("%w: %d weight bytes, manifest says %d", ErrCorrupt, len(weights), m.WeightsBytes)
	}
	sum := sha256.Sum256(weights)
	if hex.EncodeToString(sum[:]) != m.WeightsSHA256 {
		return nil, nil, fmt.Errorf("%w: weights sha256 mismatch", ErrCorrupt)
	}
	tensors := make([]Tensor, 0, len(m.Tensors))
	for i, ti := range m.Tensors {
		n := int64(1)
		for _, d := range ti.Shape {
			if d <= 0 {
				return nil, nil, fmt.Errorf("%w: tensor %s has shape %v", ErrCorrupt, ti.Name, ti.Shape)
			}
			n *= int64(d)
		}
		end := ti.Offset + 4*n
		next := m.WeightsBytes
		if i+1 < len(m.Tensors) {
			next = m.Tensors[i+1].Offset
		}
		if ti.Offset < 0 || end != next {
			return nil, nil, fmt.Errorf("%w: tensor %s does not fit its slot", ErrCorrupt, ti.Name)
		}
		vals := make([]float32, n)
		for k := range vals {
			vals[k] = math.Float32frombits(binary.LittleEndian.Uint32(weights[ti.Offset+4*int64(k):]))
		}
		tensors = append(tensors, Tensor{Name: ti.Name, Shape: slices.Clone(ti.Shape), Data: vals})
	}
	return &m, tensors, nil
}

func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var out []byte
	for {
		chunk, err := br.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > limit {
			return nil, fmt.Errorf("manifest longer than %d bytes", limit)
		}
		if err == nil {
			return out[:len(out)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// Marshal encodes to bytes.
func Marshal(m *Manifest, tensors []Tensor) ([]byte, error) {
	var buf bytes.Buffer
	if err := Encode(&buf, m, tensors); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SHA256 returns the hex sha256 of a whole artifact file: the identity of
// a model in run records.
func SHA256(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}
