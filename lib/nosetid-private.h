/* nosetid-private.h: no set-user-ID or set-group-ID file from a guest in a writable share.
 *
 * virtiofsd applies the guest's modes to the host's files, and the guest user is the host
 * user (share-private.h): a guest root that runs `chmod 4755` on a file in a writable share
 * makes a program that any local user could run as the host user. So virtiofsd runs under a
 * seccomp filter (installed right before its exec, stacked under its own) that fails with
 * EPERM every call that would put S_ISUID or S_ISGID on a file:
 *
 *   chmod, fchmod, fchmodat, fchmodat2 (virtiofsd's setattr: fchmod on an open file, or
 *     fchmodat on /proc/self/fd/N) with either bit in the mode;
 *   open, openat, creat with O_CREAT or O_TMPFILE and either bit in the mode (the mode of
 *     any other open is ignored by the kernel, so it is not looked at);
 *   mknod, mknodat with either bit (a regular file made by mknod keeps them).
 *
 * mkdir needs no rule: the kernel keeps only the permission bits and S_ISVTX of its mode.
 * Two calls whose arguments a filter cannot see fail with ENOSYS, as on a kernel without
 * them: openat2 (the mode is in a struct; the Rust virtiofsd falls back to openat) and
 * io_uring_setup (io_uring's operations pass no seccomp filter).
 *
 * S_ISGID is refused on directories too (the filter sees a mode, not the file type): `chmod
 * g+s DIR` in a share fails. A setgid directory only makes new files inherit its group, but a
 * setgid file runs with the host user's group, so both go. Clearing either bit always works.
 * Calls of another architecture's ABI (x32, 32-bit) fail with ENOSYS. */
#pragma once

/* PR_SET_NO_NEW_PRIVS, then the filter, for the calling thread and whatever it execs.
 * Async-signal-safe (for a child between fork and exec). Returns 0, or -1 with errno (EINVAL:
 * the kernel has no seccomp filters; ENOSYS: an architecture this filter does not know). */
int hutch_nosetid_install(void);
