#include "CEpoll.h"

__thread void *cepoll_current_loop_storage = NULL;

int cepoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = {.events = events, .data.u64 = token};
    return epoll_ctl(epfd, op, fd, &ev);
}

int cepoll_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int cepoll_set_thread_name(pthread_t thread, const char *name) {
    return pthread_setname_np(thread, name);
}
