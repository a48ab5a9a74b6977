#include "CEpoll.h"

__thread void *cepoll_current_loop_storage = NULL;

int cepoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = {.events = events, .data.u64 = token};
    return epoll_ctl(epfd, op, fd, &ev);
}

int cepoll_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

// glibc's GNU extension, which its Swift module leaves out.
int cepoll_spawn_close_from(posix_spawn_file_actions_t *actions, int fd) {
    return posix_spawn_file_actions_addclosefrom_np(actions, fd);
}

// Names the calling thread: prctl, no fd. Naming another thread would open
// /proc/self/task/TID/comm, an fd that a watcher of the process would see come and go.
int cepoll_name_current_thread(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}
