package transforms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model/maps"
)

// zstd coders: EncodeAll and DecodeAll are safe for concurrent use, so one
// of each serves the process (read-only after creation).
var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
)

// EncodeMap compresses a float map: a 12-byte header (H, W, C) and the
// values, zstd-compressed.
func EncodeMap(m *maps.Map) []byte {
	raw := make([]byte, 12+4*len(m.Pix))
	binary.LittleEndian.PutUint32(raw[0:], uint32(m.H))
	binary.LittleEndian.PutUint32(raw[4:], uint32(m.W))
	binary.LittleEndian.PutUint32(raw[8:], uint32(m.C))
	for i, v := range m.Pix {
		binary.LittleEndian.PutUint32(raw[12+4*i:], math.Float32bits(v))
	}
	return zenc.EncodeAll(raw, nil)
}

// DecodeMap reverses EncodeMap.
func DecodeMap(data []byte) (*maps.Map, error) {
	raw, err := zdec.DecodeAll(data, nil)
	if err != nil {
		return nil, fmt.Errorf("decompress map: %w", err)
	}
	if len(raw) < 12 {
		return nil, errors.New("map: short header")
	}
	h, w, c := int(binary.LittleEndian.Uint32(raw[0:])), int(binary.LittleEndian.Uint32(raw[4:])), int(binary.LittleEndian.Uint32(raw[8:]))
	if h <= 0 || w <= 0 || c <= 0 || len(raw) != 12+4*h*w*c {
		return nil, fmt.Errorf("map: %d bytes for %dx%dx%d", len(raw), h, w, c)
	}
	m := maps.New(h, w, c)
	for i := range m.Pix {
		m.Pix[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[12+4*i:]))
	}
	return m, nil
}

// LabelURI is where an image's label goes.
func LabelURI(out, id string) string { return storage.Join(out, id+LabelSuffix) }

// CAMURI is where an image's fused CAM goes.
func CAMURI(out, id string) string { return storage.Join(out, CAMsDir, id+".cam") }

// idIn returns the id of uri when it is dir/<id><suffix>.
func idIn(dir, uri, suffix string) (string, bool) {
	if strings.TrimSuffix(storage.Dir(uri), "/") != strings.TrimSuffix(dir, "/") || !strings.HasSuffix(uri, suffix) {
		return "", false
	}
	return strings.TrimSuffix(storage.Base(uri), suffix), true
}

// LabelID returns the image id of uri when it is a label, OUT/<id>.png
// (not an object in a sub-folder), as found by listing OUT.
func LabelID(out, uri string) (string, bool) { return idIn(out, uri, LabelSuffix) }

// CAMID returns the image id of uri when it is a stored fused CAM,
// OUT/_cams/<id>.cam.
func CAMID(out, uri string) (string, bool) { return idIn(storage.Join(out, CAMsDir), uri, ".cam") }
