package model

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/graph"
)

// pcmEps keeps the normalisations finite, as in SEAM's PCM.
const pcmEps = 1e-5

// pcmBlockEntries bounds the affinities of one block of destination
// positions per image (32 MiB of float32): a 1024 x 1024 view at stride 8
// (16,384 positions, 268 M affinities) is revised in 32 blocks, one after
// another, so the affinities held at once are one block's.
const pcmBlockEntries = 1 << 23

// pcm is the pixel correlation module of SEAM, which the reference L2G
// networks add to their CAM: each position's CAM is revised as an
// affinity-weighted average of every position's CAM, the affinity being
// the cosine similarity of low-level features (the image itself, at the
// feature map's resolution, and projections of the mid-level stages,
// detached so the refinement cannot reshape the backbone), rectified and
// normalised over the source positions. The network's output is the CAM
// plus its revision, at training and at inference.
//
// Our backbones differ from the reference's ResNet-38, so the mid-level
// features are the outputs of the (up to two) stages before the last that
// already have the final stride, each projected by a 1x1 convolution to
// an eighth of its channels (at least 16), as the reference projects 512
// and 1024 channels to 64 and 128. The revision is applied to the CAM
// rather than to the features before the classifier: the classifier is
// linear, so the two are the same, and the CAM has far fewer channels.
//
// The affinity's compute is quadratic in the number of feature positions
// (a 512 x 512 view at output stride 8 has 4,096 positions: 16.8 M
// affinities per image); its memory is bounded by pcmBlockEntries.
//
// In padded inference the padding's features are zeroed, so padded
// positions have no affinity with any real one and a real position's
// revision is what an unpadded run gives.
func (b *layerBuilder) pcm(x *Node, mids []*Node, cam *Node) *Node {
	d := cam.Shape().Dimensions
	n, h, w := d[0], d[1], d[2]
	head := *b
	head.group = Head
	feats := []*Node{downsampleMean(b.mask.apply(x), h, w)}
	for i, m := range mids {
		cin := m.Shape().Dimensions[3]
		cout := max(16, cin/8)
		wt := head.ps.get(ParamSpec{Name: head.name(fmt.Sprintf("pcm/proj%d/w", i+1)), Shape: []int{1, 1, cin, cout}, Init: InitHe, FanIn: cin, Group: Head})
		feats = append(feats, conv1x1(graph.StopGradient(m), wt))
	}
	f := graph.Concatenate(feats, 3)
	cin := f.Shape().Dimensions[3]
	cout := max(cin-3, 16) // the image alone when no stage has the final size
	wt := head.ps.get(ParamSpec{Name: head.name("pcm/mix/w"), Shape: []int{1, 1, cin, cout}, Init: InitHe, FanIn: cin, Group: Head})
	f = conv1x1(f, wt)
	norm := graph.Sqrt(graph.ReduceSum(graph.Square(f), 3))
	f = graph.Div(f, graph.Add(graph.ExpandAxes(norm, 3), graph.Scalar(f.Graph(), dtypes.Float32, pcmEps)))
	// Zero the padding's features last: a padded position's affinity with
	// every position is then 0.
	if b.mask != nil {
		f = graph.Mul(f, b.mask.at(n, h, w))
	}
	f = graph.Reshape(f, n, h*w, cout)
	c := d[3]
	revised := b.pcmRevise(f, graph.Reshape(cam, n, h*w, c), max(1, pcmBlockEntries/(h*w)))
	return graph.Add(cam, graph.Reshape(revised, n, h, w, c))
}

// downsampleMean averages x [N, H, W, C] over t x t blocks to [N, h, w,
// C], t the stride with ceil(H/t) == h, zero-padding the bottom and right
// to a multiple of t (the same in padded and unpadded runs: the padding
// beyond an element's real region is zero).
func downsampleMean(x *Node, h, w int) *Node {
	d := x.Shape().Dimensions
	t := strideOf(d[1], h)
	if tw := strideOf(d[2], w); tw > t {
		t = tw
	}
	ph, pw := h*t-d[1], w*t-d[2]
	if ph > 0 || pw > 0 {
		x = graph.Pad(x, graph.ScalarZero(x.Graph(), x.DType()),
			graph.PadAxis{}, graph.PadAxis{End: ph}, graph.PadAxis{End: pw}, graph.PadAxis{})
	}
	x = graph.Reshape(x, d[0], h, t, w, t, d[3])
	return graph.ReduceMean(x, 2, 4)
}

// pcmRevise returns the PCM revision of flat [N, P, C] by the normalised
// features f [N, P, F]: revised[dst] = sum over src of aff(src, dst) *
// flat[src] / sum over src of aff(src, dst), aff the rectified cosine
// similarity. The similarity is symmetric, so it is built as [N, dst, src]:
// the normalisation reduces the last axis and the product with flat
// contracts it, with no transpose of the P x P matrix. Destinations are
// taken rows at a time (every block is the same computation on fewer
// rows), each block's affinities rows x P, and each block waits for the
// one before it.
func (b *layerBuilder) pcmRevise(f, flat *Node, rows int) *Node {
	p := f.Shape().Dimensions[1]
	eps := graph.Scalar(f.Graph(), dtypes.Float32, pcmEps)
	var blocks []*Node
	for lo := 0; lo < p; lo += rows {
		hi := min(p, lo+rows)
		dst := f
		if lo > 0 || hi < p {
			dst = graph.Slice(f, graph.AxisRange(), graph.AxisRange(lo, hi), graph.AxisRange())
		}
		if len(blocks) > 0 {
			// A zero that depends on the previous block: this block's
			// affinities are then built only after the previous block's
			// are used and freed, so at most one block's are held at once
			// (the backend schedules independent blocks side by side).
			// Adding an exact zero leaves dst unchanged; a non-finite
			// previous block means a non-finite CAM or feature, which
			// every destination's sum over all sources already carries.
			prev := graph.ReduceAllSum(blocks[len(blocks)-1])
			dst = graph.Add(dst, graph.MulScalar(prev, 0))
		}
		aff := b.relu(graph.DotGeneral(dst, []int{2}, []int{0}, f, []int{2}, []int{0})) // [N, dst, src]
		aff = graph.Div(aff, graph.Add(graph.ReduceAndKeep(aff, graph.ReduceSum, 2), eps))
		blocks = append(blocks, graph.DotGeneral(aff, []int{2}, []int{0}, flat, []int{1}, []int{0})) // [N, dst, C]
	}
	if len(blocks) == 1 {
		return blocks[0]
	}
	return graph.Concatenate(blocks, 1)
}
