#ifndef SLUICE_CLIBUV_SHIM_H
#define SLUICE_CLIBUV_SHIM_H

#include <uv.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <unistd.h>
#include <sys/prctl.h>

/* Small adapters for what Swift cannot import or name directly from <uv.h>.
 * Every adapter is prefixed cuv_. */

/* The handle types are C structs of different sizes; Swift allocates them by size. */
static inline size_t cuv_tcp_size(void) { return sizeof(uv_tcp_t); }

/* uv_buf_t's field order differs between platforms; build one portably. */
static inline uv_buf_t cuv_buf(void *base, size_t len) {
    return uv_buf_init((char *)base, (unsigned int)len);
}

/* Names the calling thread (visible in top, gdb, perf); at most 15 bytes are kept. */
static inline void cuv_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* listen(2): 0, or a negative errno. */
static inline int cuv_listen(int fd, int backlog) {
    return listen(fd, backlog) == 0 ? 0 : -errno;
}

/* Accepts one pending connection as a non-blocking, close-on-exec socket: its descriptor,
 * or a negative errno (-EAGAIN when none is pending, -EMFILE when the process has no
 * descriptor left). The listener does its own accepting: libuv's own, on EMFILE, accepts and
 * closes every waiting client, or, when its reserved descriptor was taken by another thread,
 * retries at once for ever. */
static inline int cuv_accept(int fd) {
    int accepted = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return accepted >= 0 ? accepted : -errno;
}

/* Opens a non-blocking, close-on-exec TCP socket bound to `addr` with SO_REUSEADDR and,
 * when `reuse_port` is set, SO_REUSEPORT, so that one listener per event loop can share a
 * port and the kernel spreads accepted connections across loops. Returns the descriptor or
 * a negative errno. */
static inline int cuv_bound_socket(const struct sockaddr *addr, int reuse_port) {
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) goto fail;
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) goto fail;
    if (addr->sa_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) goto fail;
    socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, addr, len) != 0) goto fail;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    return -saved;
}

#endif
