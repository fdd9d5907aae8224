package model

import (
	"fmt"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"

	"github.com/l2gflow/l2gflow/model/backbone"
)

// Arch describes a ResNet-style backbone: a stem, then stages of basic or
// bottleneck blocks.
type Arch struct {
	Name       string `json:"name"`
	Bottleneck bool   `json:"bottleneck"` // bottleneck blocks (ResNet-50) instead of basic
	StemWidth  int    `json:"stem_width"`
	StemKernel int    `json:"stem_kernel"` // 3 or 7; the stem has stride 2
	StemPool   bool   `json:"stem_pool"`   // 3x3 max pool, stride 2, after the stem
	Depths     []int  `json:"depths"`      // blocks a stage
	Widths     []int  `json:"widths"`      // output channels a stage
	// OutputStride is the total stride of the feature map: 8 or 16. Stages
	// that would go beyond it keep stride 1 and dilate instead.
	OutputStride int `json:"output_stride"`
	// TorchvisionDilation gives the first block of a dilated stage the
	// previous stage's dilation, as torchvision's
	// replace_stride_with_dilation does (the ResNet presets, so that
	// pretrained weights compute the same features); otherwise every block
	// of the stage uses the new dilation.
	TorchvisionDilation bool `json:"torchvision_dilation,omitempty"`
	// PCM adds the reference's pixel correlation module (see pcm): the
	// CAM plus its affinity-weighted revision, at training and inference.
	PCM bool `json:"pcm,omitempty"`
}

// Preset returns a named backbone of the preset table (package backbone)
// at the given output stride.
func Preset(name string, outputStride int) (Arch, error) {
	if outputStride != 8 && outputStride != 16 {
		return Arch{}, fmt.Errorf("output stride %d: want 8 or 16", outputStride)
	}
	p, err := backbone.Lookup(name)
	if err != nil {
		return Arch{}, err
	}
	return Arch{Name: p.Name, Bottleneck: p.Bottleneck, StemWidth: p.StemWidth, StemKernel: p.StemKernel,
		StemPool: p.StemPool, Depths: p.Depths, Widths: p.Widths, OutputStride: outputStride,
		TorchvisionDilation: p.Torchvision}, nil
}

// stageStrides returns each stage's stride and dilation so that the total
// stride stops at OutputStride. The first stage keeps the resolution after
// a stem pool (as ResNet); otherwise every stage halves it.
func (a Arch) stageStrides() (strides, dilations []int) {
	total := 2
	if a.StemPool {
		total = 4
	}
	dil := 1
	for i := range a.Depths {
		s := 2
		if i == 0 && a.StemPool {
			s = 1
		}
		if total*s > a.OutputStride {
			dil *= s
			s = 1
		}
		total *= s
		strides = append(strides, s)
		dilations = append(dilations, dil)
	}
	return strides, dilations
}

// Validate checks an architecture read from a file.
func (a Arch) Validate() error {
	if len(a.Depths) == 0 || len(a.Depths) != len(a.Widths) {
		return fmt.Errorf("architecture %q: %d depths for %d widths", a.Name, len(a.Depths), len(a.Widths))
	}
	if a.OutputStride != 8 && a.OutputStride != 16 {
		return fmt.Errorf("architecture %q: output stride %d", a.Name, a.OutputStride)
	}
	if a.StemKernel != 3 && a.StemKernel != 7 {
		return fmt.Errorf("architecture %q: stem kernel %d", a.Name, a.StemKernel)
	}
	return nil
}

// TotalStride is the ratio of the input size to the feature map's: an h x
// w input gives a ceil(h/t) x ceil(w/t) CAM.
func (a Arch) TotalStride() int {
	t := 2
	if a.StemPool {
		t *= 2
	}
	strides, _ := a.stageStrides()
	for _, s := range strides {
		t *= s
	}
	return t
}

// Net is a CAM classifier: a backbone and a 1x1 convolution to C+1 maps
// (the last is background).
type Net struct {
	Arch    Arch
	Classes int // foreground classes C
	// FrozenBN freezes batch normalisation while training, as the
	// reference does with its pretrained backbone: running statistics
	// are used and kept, scales and shifts are not trained.
	FrozenBN bool
}

// Output of a network on a batch.
type Output struct {
	CAM    *Node // [N, h, w, C+1] class activation maps (pre-ReLU)
	Logits *Node // [N, C] image logits: mean of the C foreground maps
}

// forward builds the network on x [N,H,W,3] (normalised RGB).
func (n *Net) forward(b *layerBuilder, x *Node) Output {
	y, stages := n.backbone(b, x)
	head := *b
	head.group = Head
	cin := y.Shape().Dimensions[3]
	w := head.ps.get(ParamSpec{Name: head.name("classifier/w"), Shape: []int{1, 1, cin, n.Classes + 1}, Init: InitSmall, FanIn: cin, Group: Head})
	cam := conv1x1(y, w)
	if n.Arch.PCM {
		cam = b.pcm(x, n.Arch.pcmStages(stages), cam)
	}
	fg := graph.Slice(cam, graph.AxisRange(), graph.AxisRange(), graph.AxisRange(), graph.AxisRange(0, n.Classes))
	return Output{CAM: cam, Logits: b.mask.mean(fg)}
}

// pcmStages picks PCM's mid-level features: the outputs of up to two
// stages before the last that have the final stride (chosen from the
// architecture, not the input size, so the parameters do not depend on
// it).
func (a Arch) pcmStages(stages []*Node) []*Node {
	strides, _ := a.stageStrides()
	total := a.TotalStride()
	var mids []*Node
	for i := len(stages) - 2; i >= 0 && len(mids) < 2; i-- {
		if total /= strides[i+1]; total != a.TotalStride() {
			break
		}
		mids = append([]*Node{stages[i]}, mids...)
	}
	return mids
}

// backbone builds the feature extractor: stem and stages. It returns the
// final features [N,h,w,C] and every stage's output.
func (n *Net) backbone(b *layerBuilder, x *Node) (*Node, []*Node) {
	a := n.Arch
	b.frozenBN = n.FrozenBN
	y := b.convBN("stem", x, a.StemKernel, a.StemWidth, 2, 1, true)
	if a.StemPool {
		// PyTorch's MaxPool2d(3, stride 2, padding 1).
		y = b.maxPool3x3s2(b.mask.apply(y))
	}
	strides, dils := a.stageStrides()
	var stages []*Node
	for s, depth := range a.Depths {
		for k := 0; k < depth; k++ {
			stride, dil := 1, dils[s]
			if k == 0 {
				stride = strides[s]
				if a.TorchvisionDilation {
					dil = 1
					if s > 0 {
						dil = dils[s-1]
					}
				}
			}
			name := fmt.Sprintf("stage%d/block%d", s+1, k+1)
			if a.Bottleneck {
				y = b.bottleneck(name, y, a.Widths[s], stride, dil)
			} else {
				y = b.basic(name, y, a.Widths[s], stride, dil)
			}
		}
		stages = append(stages, y)
	}
	return y, stages
}

func (b *layerBuilder) basic(name string, x *Node, width, stride, dil int) *Node {
	y := b.convBN(name+"/conv1", x, 3, width, stride, dil, true)
	y = b.convBN(name+"/conv2", y, 3, width, 1, dil, false)
	return b.relu(graph.Add(y, b.shortcut(name, x, width, stride)))
}

func (b *layerBuilder) bottleneck(name string, x *Node, width, stride, dil int) *Node {
	mid := width / 4
	y := b.convBN(name+"/conv1", x, 1, mid, 1, 1, true)
	y = b.convBN(name+"/conv2", y, 3, mid, stride, dil, true)
	y = b.convBN(name+"/conv3", y, 1, width, 1, 1, false)
	return b.relu(graph.Add(y, b.shortcut(name, x, width, stride)))
}

func (b *layerBuilder) shortcut(name string, x *Node, width, stride int) *Node {
	if x.Shape().Dimensions[3] == width && stride == 1 {
		return x
	}
	return b.convBN(name+"/down", x, 1, width, stride, 1, false)
}

// ParamSpecs lists the network's parameters under prefix (e.g. "global/").
func (n *Net) ParamSpecs(backend compute.Backend, prefix string) ([]ParamSpec, error) {
	return n.paramSpecs(backend, layerBuilder{prefix: prefix, training: true})
}

// paramSpecs lists the parameters the network asks of a layer builder
// configured as lb (training, or with batch norm folded for inference),
// by building it once on a small input.
func (n *Net) paramSpecs(backend compute.Backend, lb layerBuilder) ([]ParamSpec, error) {
	var specs []ParamSpec
	err := tryGraph(func() {
		g := graph.NewGraph(backend, "specs")
		lb.ps = &paramSource{g: g}
		x := graph.Zeros(g, shapes.Make(dtypes.Float32, 1, 32, 32, 3))
		n.forward(&lb, x)
		specs = lb.ps.specs
		g.Finalize()
	})
	return specs, err
}

// tryGraph runs a graph-building function, turning GoMLX's panics into
// errors.
func tryGraph(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("build graph: %v", r)
		}
	}()
	fn()
	return nil
}
