package transforms

import (
	"testing"

	"github.com/l2gflow/l2gflow/pipelines/pipetest"
)

// TestMain runs the package's pipelines on prism, Beam's default runner.
func TestMain(m *testing.M) { pipetest.Main(m) }
