//go:build linux && !(mips || mipsle || mips64 || mips64le || ppc64 || ppc64le)

package worker

// fioAsync is FIOASYNC, which golang.org/x/sys/unix does not export: the
// asm-generic value (x86, arm, arm64, loong64, riscv64, s390x).
const fioAsync = 0x5452
