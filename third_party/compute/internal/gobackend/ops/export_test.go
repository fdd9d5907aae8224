// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

// ParallelPullForTest exposes parallelPull to the external tests.
var ParallelPullForTest = parallelPull
