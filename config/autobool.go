package config

import (
	"encoding/json"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// AutoBool is an on/off setting whose default depends on other settings:
// "true", "false" or "auto". It reads YAML and JSON booleans as well as
// those three strings (configurations and results written when the
// setting was a plain boolean stay readable), and as a command-line flag
// it is a boolean flag: --pcm alone means true.
type AutoBool string

// The values of an AutoBool.
const (
	Auto  AutoBool = "auto"
	True  AutoBool = "true"
	False AutoBool = "false"
)

// AutoBoolOf is b as an AutoBool: True or False, never Auto.
func AutoBoolOf(b bool) AutoBool {
	if b {
		return True
	}
	return False
}

// Resolve is the setting's value, def when it is auto (or empty).
func (a AutoBool) Resolve(def bool) bool {
	switch a {
	case True:
		return true
	case False:
		return false
	}
	return def
}

// String implements flag.Value.
func (a *AutoBool) String() string {
	if a == nil {
		return ""
	}
	return string(*a)
}

// Set implements flag.Value: true, false or auto (and what
// strconv.ParseBool takes for true and false).
func (a *AutoBool) Set(s string) error {
	if s == string(Auto) {
		*a = Auto
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true, false or auto", s)
	}
	*a = AutoBoolOf(b)
	return nil
}

// IsBoolFlag lets the flag stand alone (--pcm, meaning true).
func (a *AutoBool) IsBoolFlag() bool { return true }

// UnmarshalJSON reads a JSON boolean or one of the three strings.
func (a *AutoBool) UnmarshalJSON(data []byte) error {
	var b bool
	if err := json.Unmarshal(data, &b); err == nil {
		*a = AutoBoolOf(b)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("want true, false or \"auto\", got %s", data)
	}
	return a.Set(s)
}

// UnmarshalYAML reads a YAML boolean or one of the three strings.
func (a *AutoBool) UnmarshalYAML(value *yaml.Node) error {
	if value.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want true, false or auto", value.Line)
	}
	if err := a.Set(value.Value); err != nil {
		return fmt.Errorf("line %d: %w", value.Line, err)
	}
	return nil
}
