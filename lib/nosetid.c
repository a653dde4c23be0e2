/* nosetid.c: the seccomp filter that keeps set-user-ID and set-group-ID bits out of shares.
 * See nosetid-private.h. Classic BPF, written out: every rule is a comparison of the syscall
 * number followed by a body that ends in a return, so a rule that does not match jumps over
 * exactly its body to the next one. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "nosetid-private.h"

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

/* the same number on every architecture (Linux 6.6); absent from older headers */
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif

#define SETID_BITS (S_ISUID | S_ISGID)
/* O_CREAT, and the bit of O_TMPFILE that is not O_DIRECTORY (asm-generic, used by x86 and
 * arm64 alike) */
#define CREATING_FLAGS (O_CREAT | 020000000)

/* The low 32 bits of argument i: mode_t and int arguments live there. */
#if __BYTE_ORDER == __LITTLE_ENDIAN
#define ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#else
#define ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#endif

#define RETURN(action) BPF_STMT(BPF_RET | BPF_K, (action))
#define DENY(err) RETURN(SECCOMP_RET_ERRNO | ((err)&SECCOMP_RET_DATA))
#define ALLOW RETURN(SECCOMP_RET_ALLOW)
#define LOAD(offset) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (offset))
/* jump over `skip` instructions unless the accumulator has any of bits */
#define UNLESS_ANY(bits, skip) BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (bits), 0, (skip))

/* nr with a set-ID bit in argument `mode`: EPERM. 5 instructions. */
#define MODE_RULE(nr, mode)                                                                        \
  BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4), LOAD(ARG_LOW(mode)), UNLESS_ANY(SETID_BITS, 1), \
      DENY(EPERM), ALLOW

/* nr creating a file (argument `flags`) with a set-ID bit in argument `mode`: EPERM. 7
 * instructions. */
#define CREATE_RULE(nr, flags, mode)                                                               \
  BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 6), LOAD(ARG_LOW(flags)),                           \
      UNLESS_ANY(CREATING_FLAGS, 3), LOAD(ARG_LOW(mode)), UNLESS_ANY(SETID_BITS, 1), DENY(EPERM),  \
      ALLOW

/* nr always fails with err. 2 instructions. */
#define ERRNO_RULE(nr, err) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), DENY(err)

#ifdef NATIVE_ARCH
static const struct sock_filter program[] = {
    LOAD(offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
    DENY(ENOSYS),
    LOAD(offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
    /* x32 calls are numbered from 0x40000000 */
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
    DENY(ENOSYS),
    MODE_RULE(SYS_chmod, 1),
    MODE_RULE(SYS_mknod, 1),
    MODE_RULE(SYS_creat, 1),
    CREATE_RULE(SYS_open, 1, 2),
#endif
    MODE_RULE(SYS_fchmod, 1),
    MODE_RULE(SYS_fchmodat, 2),
    MODE_RULE(SYS_fchmodat2, 2),
    MODE_RULE(SYS_mknodat, 2),
    CREATE_RULE(SYS_openat, 2, 3),
    ERRNO_RULE(SYS_openat2, ENOSYS),
    ERRNO_RULE(SYS_io_uring_setup, ENOSYS),
    ALLOW,
};
#endif

int hutch_nosetid_install(void) {
#ifdef NATIVE_ARCH
  struct sock_fprog fprog = {
      .len = (unsigned short)(sizeof(program) / sizeof(program[0])),
      .filter = (struct sock_filter *)program,
  };
  /* needed to install a filter without CAP_SYS_ADMIN; virtiofsd needs no privilege from exec */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return -1;
  /* prctl rather than seccomp(2), which valgrind does not know (the unit tests run there) */
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
#else
  errno = ENOSYS;
  return -1;
#endif
}
