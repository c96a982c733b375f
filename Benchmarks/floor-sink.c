// The kernel's floor for a pipelining SMTP sink: a server that answers what a client sends
// with the fewest system calls and almost nothing else. One epoll thread; each wake-up reads
// every ready connection once, answers every complete command in what it read, and then writes
// each connection's replies in one write — as `sluice sink` writes them, after every ready
// connection has been read. It offers PIPELINING and CHUNKING; DATA is read to its terminator
// line by line, BDAT content is counted and skipped. Nothing is parsed beyond the verb and
// BDAT's size, nothing is stored: its CPU per message is what the kernel charges for a sink's
// calls, and a real sink's CPU above it is its own work.
//
//   cc -O2 -o floor-sink Benchmarks/floor-sink.c
//   ./floor-sink PORT            # 127.0.0.1 only; stops on SIGTERM or SIGINT, or after 600 s
//
// On stopping it prints how many messages it took.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { COMMAND, DATA, BDAT };

struct connection {
    int fd;
    enum mode mode;
    // BDAT: the chunk's octets not yet read, and whether it is the last.
    long remaining;
    int last;
    int quitting;
    char in[256 * 1024];
    size_t start, length;  // unread input is in[start ..< length]
    char out[64 * 1024];
    size_t out_length;
    int ready;  // read in this wake-up: its replies go out at the end of it
};

static volatile sig_atomic_t stopping = 0;
static long messages = 0;

static void stop(int signal) {
    (void)signal;
    stopping = 1;
}

static void die(const char *what) {
    fprintf(stderr, "floor-sink: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void flush(struct connection *c) {
    size_t written = 0;
    while (written < c->out_length) {
        // Blocking writes: the replies are small and the client reads them.
        ssize_t n = write(c->fd, c->out + written, c->out_length - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            c->quitting = 1;
            break;
        }
        written += (size_t)n;
    }
    c->out_length = 0;
}

static void reply(struct connection *c, const char *text) {
    size_t length = strlen(text);
    if (c->out_length + length > sizeof c->out) flush(c);
    memcpy(c->out + c->out_length, text, length);
    c->out_length += length;
}

// Answers one command line (without its line ending).
static void command(struct connection *c, const char *line, size_t length) {
    if (length >= 4 && strncasecmp(line, "EHLO", 4) == 0) {
        reply(c, "250-floor\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n");
    } else if (length >= 4 && strncasecmp(line, "BDAT", 4) == 0) {
        char *end;
        c->remaining = strtol(line + 4, &end, 10);
        c->last = (size_t)(end - line) + 5 <= length && strncasecmp(end, " LAST", 5) == 0;
        c->mode = BDAT;
    } else if (length >= 4 && strncasecmp(line, "DATA", 4) == 0) {
        reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
        c->mode = DATA;
    } else if (length >= 4 && strncasecmp(line, "QUIT", 4) == 0) {
        reply(c, "221 2.0.0 Bye\r\n");
        c->quitting = 1;
    } else if (length >= 4 && (strncasecmp(line, "MAIL", 4) == 0 || strncasecmp(line, "RCPT", 4) == 0
                               || strncasecmp(line, "RSET", 4) == 0 || strncasecmp(line, "NOOP", 4) == 0
                               || strncasecmp(line, "HELO", 4) == 0)) {
        reply(c, "250 2.0.0 Ok\r\n");
    } else {
        reply(c, "500 5.5.2 Error: command not recognized\r\n");
    }
}

// Answers everything complete in the connection's input; keeps the rest for the next read.
static void process(struct connection *c) {
    while (c->start < c->length && !c->quitting) {
        char *at = c->in + c->start;
        size_t available = c->length - c->start;
        if (c->mode == BDAT) {
            size_t take = available < (size_t)c->remaining ? available : (size_t)c->remaining;
            c->start += take;
            c->remaining -= (long)take;
            if (c->remaining > 0) break;
            if (c->last) messages++;
            reply(c, c->last ? "250 2.0.0 Ok: queued\r\n" : "250 2.0.0 Ok\r\n");
            c->mode = COMMAND;
            continue;
        }
        char *newline = memchr(at, '\n', available);
        if (!newline) break;
        size_t line = (size_t)(newline - at) + 1;
        if (c->mode == DATA) {
            if (line == 3 && at[0] == '.' && at[1] == '\r') {
                messages++;
                reply(c, "250 2.0.0 Ok: queued\r\n");
                c->mode = COMMAND;
            }
        } else {
            command(c, at, line >= 2 && at[line - 2] == '\r' ? line - 2 : line - 1);
        }
        c->start += line;
    }
    if (c->start == c->length) {
        c->start = c->length = 0;
    } else if (c->start > sizeof c->in / 2) {
        memmove(c->in, c->in + c->start, c->length - c->start);
        c->length -= c->start;
        c->start = 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 2 || atoi(argv[1]) <= 0) {
        fprintf(stderr, "usage: floor-sink PORT\n");
        return 64;
    }
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    signal(SIGPIPE, SIG_IGN);
    alarm(600);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1024) != 0)
        die("listen");
    int poller = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    if (poller < 0 || epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event) != 0) die("epoll");

    struct epoll_event events[64];
    struct connection *ready[64];
    while (!stopping) {
        int count = epoll_wait(poller, events, 64, -1);
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) die("epoll_wait");
        int readyCount = 0;
        for (int k = 0; k < count; k++) {
            struct connection *c = events[k].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
                    struct connection *new = calloc(1, sizeof *new);
                    if (!new) die("calloc");
                    new->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
                    struct epoll_event watch = {.events = EPOLLIN, .data.ptr = new};
                    if (epoll_ctl(poller, EPOLL_CTL_ADD, fd, &watch) != 0) die("epoll_ctl");
                    reply(new, "220 floor ESMTP\r\n");
                    flush(new);
                }
                continue;
            }
            ssize_t got = read(c->fd, c->in + c->length, sizeof c->in - c->length);
            if (got <= 0) {
                if (got < 0 && errno == EINTR) continue;
                close(c->fd);
                free(c);
                continue;
            }
            c->length += (size_t)got;
            process(c);
            ready[readyCount++] = c;
        }
        for (int k = 0; k < readyCount; k++) {
            struct connection *c = ready[k];
            flush(c);
            if (c->quitting) {
                close(c->fd);
                free(c);
            }
        }
    }
    printf("%ld messages\n", messages);
    return 0;
}
