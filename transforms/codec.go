package transforms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
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

// fusedMagic starts a fused CAM file (EncodeFused); a file without it is
// the older full-resolution map of every class (EncodeMap).
var fusedMagic = [4]byte{'L', '2', 'G', 'F'}

// EncodeFused compresses an image's fused CAM: "L2GF", a version (1), the
// image's height and width, the map's height, width and channel count,
// the channels' classes, then the values; zstd-compressed.
func EncodeFused(f *model.Fused) []byte {
	m := f.Map
	head := 4 + 4*6 + 4*len(f.Tags)
	raw := make([]byte, head+4*len(m.Pix))
	copy(raw, fusedMagic[:])
	for i, v := range []int{1, f.H, f.W, m.H, m.W, m.C} {
		binary.LittleEndian.PutUint32(raw[4+4*i:], uint32(v))
	}
	for i, t := range f.Tags {
		binary.LittleEndian.PutUint32(raw[28+4*i:], uint32(t))
	}
	for i, v := range m.Pix {
		binary.LittleEndian.PutUint32(raw[head+4*i:], math.Float32bits(v))
	}
	return zenc.EncodeAll(raw, nil)
}

// DecodeFused reverses EncodeFused. A file of the older format (a
// full-resolution map of every class, EncodeMap) is read as a fused map
// of the given tags' channels.
func DecodeFused(data []byte, tags []int) (*model.Fused, error) {
	raw, err := zdec.DecodeAll(data, nil)
	if err != nil {
		return nil, fmt.Errorf("decompress fused CAM: %w", err)
	}
	if len(raw) < 28 || [4]byte(raw[:4]) != fusedMagic {
		m, err := DecodeMap(data)
		if err != nil {
			return nil, err
		}
		sel := maps.New(m.H, m.W, len(tags))
		for _, t := range tags {
			if t < 0 || t >= m.C {
				return nil, fmt.Errorf("fused CAM: tag %d outside its %d channels", t, m.C)
			}
		}
		for p := 0; p < m.H*m.W; p++ {
			for i, t := range tags {
				sel.Pix[p*len(tags)+i] = m.Pix[p*m.C+t]
			}
		}
		return &model.Fused{H: m.H, W: m.W, Tags: append([]int(nil), tags...), Map: sel}, nil
	}
	u := func(i int) int { return int(binary.LittleEndian.Uint32(raw[4+4*i:])) }
	version, h, w, mh, mw, k := u(0), u(1), u(2), u(3), u(4), u(5)
	head := 28 + 4*k
	switch {
	case version != 1:
		return nil, fmt.Errorf("fused CAM: version %d, this l2gflow reads 1", version)
	case h <= 0 || w <= 0 || mh <= 0 || mw <= 0 || mh > h || mw > w || k < 0 || k > 254 || len(raw) != head+4*mh*mw*k:
		return nil, fmt.Errorf("fused CAM: %d bytes for a %dx%d map of %d classes of a %dx%d image", len(raw), mw, mh, k, w, h)
	}
	f := &model.Fused{H: h, W: w, Map: maps.New(mh, mw, k)}
	for i := range k {
		f.Tags = append(f.Tags, int(binary.LittleEndian.Uint32(raw[28+4*i:])))
	}
	for i := range f.Map.Pix {
		f.Map.Pix[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[head+4*i:]))
	}
	return f, nil
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
