//go:build linux && (mips || mipsle || mips64 || mips64le || ppc64 || ppc64le)

package worker

// fioAsync is FIOASYNC where the kernel defines it as _IOW('f', 125, int)
// (arch/mips and arch/powerpc ioctls.h, whose _IOC_WRITE is 4 and size
// field 13 bits wide).
const fioAsync = 0x8004667d
