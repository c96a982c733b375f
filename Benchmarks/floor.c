// The kernel's floor for a pipelined SMTP client: the fewest system calls a client can make
// to send 1 KB messages with DATA under PIPELINING (RFC 2920), and almost nothing else. Each
// session, on one epoll thread, makes one writev per message (its content and terminator,
// then the next MAIL, RCPT and DATA) and one read for the replies that answer it — the same
// calls `sluice bench` makes against a server without CHUNKING, written as Sluice writes them:
// after every session ready in that wake-up has been read, so a single-threaded server finds
// them together. Its CPU per message is what the kernel charges for those calls; a real
// client's CPU above it is its own work.
//
// With `-c WINDOW` it is the floor for CHUNKING (RFC 3030) instead, as Sluice sends to a
// server that offers it: each session keeps WINDOW transactions in flight, each a MAIL, an RCPT
// and a `BDAT n LAST` with the content after it, and whenever a read completes some of them it
// sends as many new ones in one writev — several transactions per write and per read.
//
//   cc -O2 -o floor Benchmarks/floor.c
//   ./floor [-c WINDOW] PORT SESSIONS MESSAGES SIZE   # 127.0.0.1 only; bounded by MESSAGES and 120 s
//
// Every reply is checked (220, 250, 354, 250): a server that refuses anything is an error,
// not a fast run.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

enum phase { GREETING, EHLO, ENVELOPE, MESSAGE_AND_ENVELOPE, LAST_MESSAGE, DONE, CHUNKING };

enum { MAXIMUM_WINDOW = 64 };

struct session {
    int fd;
    enum phase phase;
    char replies[8192];
    size_t length;
    // What goes out at the end of this wake-up: with CHUNKING, two pieces a transaction and QUIT.
    struct iovec out[2 * MAXIMUM_WINDOW + 1];
    int out_count;
    // CHUNKING: transactions sent and not yet answered, and the replies of the oldest one
    // that arrived so far (each transaction has three).
    int in_flight;
    int answered;
};

static const char envelope[] = "MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n";

static void die(const char *what) {
    if (errno) fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    else fprintf(stderr, "floor: %s\n", what);
    exit(1);
}

static void queue(struct session *s, const void *bytes, size_t length) {
    s->out[s->out_count++] = (struct iovec){(void *)bytes, length};
}

static void flush(struct session *s) {
    // Blocking sockets: writev returns once all of it is in the socket buffer.
    ssize_t total = 0;
    for (int i = 0; i < s->out_count; i++) total += (ssize_t)s->out[i].iov_len;
    if (s->out_count > 0 && writev(s->fd, s->out, s->out_count) != total) die("writev");
    s->out_count = 0;
}

// The codes of the complete replies in `s->replies` (final lines only: the code then a space,
// or the code alone, as RFC 5321 allows), or -1 if the buffer does not end on a complete line.
static int reply_codes(struct session *s, int *codes, int capacity) {
    if (s->length == 0 || s->replies[s->length - 1] != '\n') return -1;
    int count = 0;
    size_t start = 0;
    for (size_t i = 0; i < s->length; i++) {
        if (s->replies[i] != '\n') continue;
        // Only a line long enough has a character after its code (a short last line would
        // have this read past the bytes received).
        if (i - start >= 4 && (s->replies[start + 3] == ' ' || s->replies[start + 3] == '\r') && count < capacity)
            codes[count++] = atoi(s->replies + start);
        start = i + 1;
    }
    return count;
}

int main(int argc, char **argv) {
    int window = 0;
    if (argc == 7 && strcmp(argv[1], "-c") == 0) {
        window = atoi(argv[2]);
        argv += 2;
        argc -= 2;
        if (window <= 0 || window > MAXIMUM_WINDOW) {
            fprintf(stderr, "floor: WINDOW must be 1 to %d\n", MAXIMUM_WINDOW);
            return 64;
        }
    }
    if (argc != 5) {
        fprintf(stderr, "usage: floor [-c WINDOW] PORT SESSIONS MESSAGES SIZE\n");
        return 64;
    }
    int port = atoi(argv[1]), sessions = atoi(argv[2]), messages = atoi(argv[3]), size = atoi(argv[4]);
    if (port <= 0 || sessions <= 0 || messages <= 0 || size < 2) {
        fprintf(stderr, "floor: PORT, SESSIONS, MESSAGES and SIZE must be positive\n");
        return 64;
    }
    alarm(120);

    // SIZE bytes of 78-character lines, then the terminator.
    char *content = malloc((size_t)size + 5);
    if (!content) die("malloc");
    memset(content, 'x', (size_t)size);
    for (int i = 78; i + 1 < size - 2; i += 80) {
        content[i] = '\r';
        content[i + 1] = '\n';
    }
    content[size - 2] = '\r';
    content[size - 1] = '\n';
    memcpy(content + size, ".\r\n", 3);
    // With CHUNKING the content goes as it is, after its BDAT command.
    size_t content_length = window ? (size_t)size : (size_t)size + 3;
    char chunked[160];
    size_t chunked_length = (size_t)snprintf(chunked, sizeof chunked,
        "MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nBDAT %d LAST\r\n", size);

    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    int poller = epoll_create1(EPOLL_CLOEXEC);
    struct session *all = calloc((size_t)sessions, sizeof *all);
    if (poller < 0 || !all) die("setup");
    for (int i = 0; i < sessions; i++) {
        all[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int on = 1;
        setsockopt(all[i].fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        if (all[i].fd < 0 || connect(all[i].fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect");
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(poller, EPOLL_CTL_ADD, all[i].fd, &event) != 0) die("epoll_ctl");
    }

    int started = 0, delivered = 0, open = sessions;
    struct epoll_event ready[64];
    while (open > 0) {
        int count = epoll_wait(poller, ready, 64, -1);
        if (count < 0 && errno == EINTR) continue;
        if (count < 0) die("epoll_wait");
        for (int k = 0; k < count; k++) {
            struct session *s = &all[ready[k].data.u32];
            ssize_t got = read(s->fd, s->replies + s->length, sizeof s->replies - s->length);
            if (got <= 0) {
                if (got == 0) errno = 0;  // no error: the server closed
                if (s->phase != DONE) die("the server closed the connection early");
                close(s->fd);
                open--;
                continue;
            }
            s->length += (size_t)got;
            if (s->phase == CHUNKING) {
                int codes[3 * MAXIMUM_WINDOW + 1];
                int replies = reply_codes(s, codes, 3 * MAXIMUM_WINDOW + 1);
                if (replies < 0) continue;
                s->length = 0;
                for (int r = 0; r < replies; r++) {
                    errno = 0;
                    if (s->in_flight == 0) {
                        if (codes[r] != 221 || started < messages) die("unexpected reply after the last transaction");
                        s->phase = DONE;
                        break;
                    }
                    if (codes[r] != 250) die("unexpected reply to MAIL, RCPT or BDAT");
                    if (++s->answered < 3) continue;
                    s->answered = 0;
                    s->in_flight--;
                    delivered++;
                    if (started < messages) {
                        started++;
                        s->in_flight++;
                        queue(s, chunked, chunked_length);
                        queue(s, content, content_length);
                    } else if (s->in_flight == 0) {
                        queue(s, "QUIT\r\n", 6);
                    }
                }
                continue;
            }
            int codes[8];
            int replies = reply_codes(s, codes, 8);
            // Replies answered per phase: greeting; EHLO; MAIL, RCPT, DATA; the message's
            // 250 and the next MAIL, RCPT, DATA; the last message's 250 (and QUIT's 221, in
            // the same read or the next); QUIT's 221.
            static const int expected[] = {1, 1, 3, 4, 1, 1};
            if (replies < expected[s->phase]) continue;
            errno = 0;
            if (replies > expected[s->phase] && !(s->phase == LAST_MESSAGE && replies == 2))
                die("more replies than commands");
            s->length = 0;
            switch (s->phase) {
            case GREETING:
                if (codes[0] != 220) die("unexpected reply to the greeting");
                queue(s, "EHLO floor.example\r\n", 20);
                s->phase = EHLO;
                break;
            case EHLO:
                if (codes[0] != 250) die("unexpected reply to EHLO");
                if (started == messages) {
                    queue(s, "QUIT\r\n", 6);
                    s->phase = DONE;
                    break;
                }
                if (window) {
                    for (int t = 0; t < window && started < messages; t++) {
                        started++;
                        s->in_flight++;
                        queue(s, chunked, chunked_length);
                        queue(s, content, content_length);
                    }
                    s->phase = CHUNKING;
                    break;
                }
                started++;
                queue(s, envelope, sizeof envelope - 1);
                s->phase = ENVELOPE;
                break;
            case MESSAGE_AND_ENVELOPE:
                if (codes[0] != 250) die("unexpected reply to the end of data");
                delivered++;
                memmove(codes, codes + 1, 3 * sizeof *codes);
                /* fall through */
            case ENVELOPE:
                if (codes[0] != 250 || codes[1] != 250 || codes[2] != 354) die("unexpected reply to MAIL, RCPT or DATA");
                queue(s, content, content_length);
                if (started < messages) {
                    started++;
                    queue(s, envelope, sizeof envelope - 1);
                    s->phase = MESSAGE_AND_ENVELOPE;
                } else {
                    queue(s, "QUIT\r\n", 6);
                    s->phase = LAST_MESSAGE;
                }
                break;
            case LAST_MESSAGE:
                if (codes[0] != 250 || (replies == 2 && codes[1] != 221)) die("unexpected reply to the end of data or QUIT");
                delivered++;
                s->phase = DONE;
                break;
            case DONE:
                if (codes[0] != 221) die("unexpected reply to QUIT");
                break;
            case CHUNKING:
                break;  // handled above
            }
        }
        for (int k = 0; k < count; k++) flush(&all[ready[k].data.u32]);
    }
    if (delivered != messages) {
        fprintf(stderr, "floor: %d of %d messages delivered\n", delivered, messages);
        return 1;
    }
    printf("%d messages delivered\n", delivered);
    return 0;
}
