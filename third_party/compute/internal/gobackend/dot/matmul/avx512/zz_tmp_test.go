//go:build amd64 && goexperiment.simd

package avx512

import (
	"fmt"
	"testing"
	"time"
	"unsafe"
)

func BenchmarkZZRowMajorBlocks(b *testing.B) {
	const K, N = 2304, 256
	for _, rows := range []int{64, 128} {
		for _, kLen := range []int{128, 256, 384, 512, 1024} {
			for _, order := range []string{"strips-outer", "tiles-outer"} {
				b.Run(fmt.Sprintf("rows%d/k%d/%s", rows, kLen, order), func(b *testing.B) {
					lhs := make([]float32, rows*K)
					for i := range lhs {
						lhs[i] = float32(i%7) * 0.1
					}
					strips := N / 32
					rhs := make([]float32, strips*kLen*32)
					out := make([]float32, rows*N)
					flops := 0.0
					start := time.Now()
					for b.Loop() {
						for k0 := 0; k0+kLen <= K; k0 += kLen {
							if order == "strips-outer" {
								for s := 0; s < strips; s++ {
									for r := 0; r < rows; r += 8 {
										avx512RowMajorLHSKernelFloat32Asm(unsafe.Pointer(&lhs[r*K+k0]), 4*K, unsafe.Pointer(&rhs[s*kLen*32]), unsafe.Pointer(&out[r*N+32*s]), 4*N, kLen, k0 > 0)
									}
								}
							} else {
								for r := 0; r < rows; r += 8 {
									for s := 0; s < strips; s++ {
										avx512RowMajorLHSKernelFloat32Asm(unsafe.Pointer(&lhs[r*K+k0]), 4*K, unsafe.Pointer(&rhs[s*kLen*32]), unsafe.Pointer(&out[r*N+32*s]), 4*N, kLen, k0 > 0)
									}
								}
							}
							flops += 2 * float64(rows*N*kLen)
						}
					}
					b.ReportMetric(flops/time.Since(start).Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

func BenchmarkZZRowMajorParallel(b *testing.B) {
	const K, N, rows, kLen = 2304, 256, 128, 512
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads%d", threads), func(b *testing.B) {
			start := time.Now()
			done := make(chan float64)
			for t := 0; t < threads; t++ {
				go func() {
					lhs := make([]float32, rows*K)
					rhs := make([]float32, 8*kLen*32)
					out := make([]float32, rows*N)
					flops := 0.0
					for time.Since(start) < 2*time.Second {
						for k0 := 0; k0+kLen <= K; k0 += kLen {
							for s := 0; s < 8; s++ {
								for r := 0; r < rows; r += 8 {
									avx512RowMajorLHSKernelFloat32Asm(unsafe.Pointer(&lhs[r*K+k0]), 4*K, unsafe.Pointer(&rhs[s*kLen*32]), unsafe.Pointer(&out[r*N+32*s]), 4*N, kLen, k0 > 0)
								}
							}
							flops += 2 * float64(rows*N*kLen)
						}
					}
					done <- flops
				}()
			}
			total := 0.0
			for t := 0; t < threads; t++ {
				total += <-done
			}
			b.ReportMetric(total/time.Since(start).Seconds()/1e9, "GFLOP/s")
		})
	}
}
