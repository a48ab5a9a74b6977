// The few Linux APIs the Glibc Swift module does not export: epoll, eventfd,
// signalfd, accept4, naming a thread, and a thread-local variable (Swift has
// none). This header is the only place C is seen.
#ifndef CEPOLL_H
#define CEPOLL_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>

// epoll's flags are enum members and macros; plain constants import cleanly.
static const uint32_t CEPOLL_IN = EPOLLIN;
static const uint32_t CEPOLL_OUT = EPOLLOUT;
static const uint32_t CEPOLL_RDHUP = EPOLLRDHUP;
static const uint32_t CEPOLL_HUP = EPOLLHUP;
static const uint32_t CEPOLL_ERR = EPOLLERR;
static const int CEPOLL_CTL_ADD = EPOLL_CTL_ADD;
static const int CEPOLL_CTL_MOD = EPOLL_CTL_MOD;
static const int CEPOLL_CTL_DEL = EPOLL_CTL_DEL;
static const int CEPOLL_CLOEXEC = EPOLL_CLOEXEC;
static const int CEFD_NONBLOCK = EFD_NONBLOCK;
static const int CEFD_CLOEXEC = EFD_CLOEXEC;
static const int CSFD_NONBLOCK = SFD_NONBLOCK;
static const int CSFD_CLOEXEC = SFD_CLOEXEC;
static const int CSOCK_NONBLOCK = SOCK_NONBLOCK;
static const int CSOCK_CLOEXEC = SOCK_CLOEXEC;

/// `struct epoll_event` is packed on x86_64; reading its fields through these
/// keeps Swift from guessing the layout.
static inline uint32_t cepoll_event_flags(const struct epoll_event *e) { return e->events; }
static inline uint64_t cepoll_event_token(const struct epoll_event *e) { return e->data.u64; }

/// The event loop running on this thread (NULL on threads that run none):
/// how a loop tells, in a load and a compare, that a call comes from its own
/// thread. One variable per thread, written only by that thread.
extern __thread void *cepoll_current_loop_storage;
static inline void *cepoll_current_loop(void) { return cepoll_current_loop_storage; }
static inline void cepoll_set_current_loop(void *loop) { cepoll_current_loop_storage = loop; }

int cepoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
int cepoll_name_current_thread(const char *name);
int cepoll_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int cepoll_spawn_close_from(posix_spawn_file_actions_t *actions, int fd);

#endif
