// Package backbone is the one table of l2gflow's backbone presets: their
// names, layouts and whether torchvision weights fit them. The networks
// (package model), configuration validation and the CLI's help texts all
// read it, so a preset is added or renamed in one place.
package backbone

import (
	"fmt"
	"strings"
)

// Preset is a ResNet-style backbone layout: a stem (stride 2), then stages
// of basic or bottleneck blocks.
type Preset struct {
	Name    string
	Summary string // one line for help texts
	// Bottleneck blocks (ResNet-50) instead of basic ones.
	Bottleneck bool
	StemWidth  int
	StemKernel int  // 3 or 7
	StemPool   bool // a 3x3 max pool of stride 2 after the stem
	Depths     []int
	Widths     []int // output channels a stage
	// Torchvision marks a layout that is torchvision's, so that its
	// ImageNet weights (safetensors or ONNX) can be loaded.
	Torchvision bool
}

var presets = []Preset{
	{Name: "tiny", Summary: "0.22 M parameters, trains from scratch on 2 cores in minutes",
		StemWidth: 16, StemKernel: 3, Depths: []int{1, 1, 1}, Widths: []int{32, 64, 96}},
	{Name: "resnet18", Summary: "torchvision ResNet-18 (basic blocks)", Torchvision: true,
		StemWidth: 64, StemKernel: 7, StemPool: true, Depths: []int{2, 2, 2, 2}, Widths: []int{64, 128, 256, 512}},
	{Name: "resnet34", Summary: "torchvision ResNet-34 (basic blocks)", Torchvision: true,
		StemWidth: 64, StemKernel: 7, StemPool: true, Depths: []int{3, 4, 6, 3}, Widths: []int{64, 128, 256, 512}},
	{Name: "resnet50", Summary: "torchvision ResNet-50 (bottleneck blocks)", Torchvision: true, Bottleneck: true,
		StemWidth: 64, StemKernel: 7, StemPool: true, Depths: []int{3, 4, 6, 3}, Widths: []int{256, 512, 1024, 2048}},
}

// Default is the preset used when none is configured.
const Default = "tiny"

// Lookup returns the preset with the given name.
func Lookup(name string) (Preset, error) {
	for _, p := range presets {
		if p.Name == name {
			p.Depths = append([]int(nil), p.Depths...)
			p.Widths = append([]int(nil), p.Widths...)
			return p, nil
		}
	}
	return Preset{}, fmt.Errorf("unknown backbone %q (want %s)", name, Choices(Names()))
}

// Names lists every preset, in the table's order.
func Names() []string {
	var out []string
	for _, p := range presets {
		out = append(out, p.Name)
	}
	return out
}

// Pretrainable lists the presets that torchvision or timm weights fit.
func Pretrainable() []string {
	var out []string
	for _, p := range presets {
		if p.Torchvision {
			out = append(out, p.Name)
		}
	}
	return out
}

// Choices joins names for a message: "a, b or c".
func Choices(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Help is a flag's help text listing the presets.
func Help() string {
	var parts []string
	for _, p := range presets {
		parts = append(parts, p.Name+" ("+p.Summary+")")
	}
	return strings.Join(parts, "; ")
}
