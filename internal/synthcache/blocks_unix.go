//go:build unix

package synthcache

import "syscall"

// regionBlocks is how many blocks one mapping holds.
const regionBlocks = 16

// offHeap returns a function that hands out blocks from anonymous memory
// mappings, outside the Go heap: the garbage collector neither scans them
// nor counts them, so that a full cache does not also double the heap the
// collector lets grow before it runs. Blocks are never unmapped; the cache
// reuses them.
func offHeap() func() []byte {
	var region []byte
	return func() []byte {
		if len(region) == 0 {
			m, err := syscall.Mmap(-1, 0, regionBlocks*blockSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
			if err != nil {
				return make([]byte, 0, blockSize) // on the heap, then
			}
			region = m
		}
		b := region[:0:blockSize]
		region = region[blockSize:]
		return b
	}
}
