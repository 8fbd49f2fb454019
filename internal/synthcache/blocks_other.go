//go:build !unix

package synthcache

// offHeap returns a function that hands out blocks; without memory
// mappings they come from the Go heap.
func offHeap() func() []byte {
	return func() []byte { return make([]byte, 0, blockSize) }
}
