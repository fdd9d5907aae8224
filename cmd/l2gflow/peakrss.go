package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// peakRSSPoll is how often pollPeakRSS reads a child's high-water mark.
const peakRSSPoll = 10 * time.Millisecond

// pollPeakRSS reads the VmHWM line of /proc/<pid>/status (the peak
// resident set of the process's own address space) every peakRSSPoll
// until done is closed, and returns the largest value in MB (0 where
// /proc has no such line, as off Linux). The rusage of a waited-for child
// is no measure of its peak: on Linux exec keeps the larger of the old
// and the new high-water marks, and a child started from a process
// inherits that process's, so a child smaller than the bench process
// reported the bench process's size. Growth in the last poll interval
// before the child exits is not seen.
func pollPeakRSS(pid int, done <-chan struct{}) float64 {
	path := fmt.Sprintf("/proc/%d/status", pid)
	tick := time.NewTicker(peakRSSPoll)
	defer tick.Stop()
	var peak float64
	for {
		if kb, ok := readVMHWM(path); ok {
			peak = max(peak, float64(kb)/1024)
		}
		select {
		case <-done:
			return peak
		case <-tick.C:
		}
	}
}

// readVMHWM returns the VmHWM figure (kB) of a /proc status file; false
// when the file or the line is missing (a process that has exited).
func readVMHWM(path string) (int64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			f := bytes.Fields(rest) // "123456 kB"
			if len(f) == 0 {
				return 0, false
			}
			kb, err := strconv.ParseInt(string(f[0]), 10, 64)
			return kb, err == nil
		}
	}
	return 0, false
}
