import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// Starting the process that takes over listening sockets, as systemd would
/// start it: the sockets as fds 3, 4, ..., `LISTEN_FDS` their count,
/// `LISTEN_FDNAMES` their names, `LISTEN_PID` its own pid, and
/// `NOTIFY_SOCKET` for its `READY=1`.
public enum SuccessorProcess {
    /// Starts `executable` with `arguments` and returns its pid. The rest of
    /// this process's environment goes with it, and stdin, stdout and
    /// stderr; no other fd does. `LISTEN_PID` must be the child's own pid, known only
    /// once it runs: a `/bin/sh` sets it and execs the executable in its place.
    public static func spawn(
        _ executable: String, arguments: [String], sockets: [SocketActivation.PassedSocket], notifySocket: String
    ) throws(SystemError) -> pid_t {
        // Copies above the fds they go to, so that no dup2 overwrites another's
        // source, and each makes a new fd, without close-on-exec.
        let end = SocketActivation.firstSocket + Int32(sockets.count)
        var copies: [Int32] = []
        defer { for copy in copies { close(copy) } }
        for socket in sockets {
            let copy = fcntl(socket.fd, F_DUPFD_CLOEXEC, end)
            guard copy >= 0 else { throw SystemError("fcntl(F_DUPFD_CLOEXEC)", "fd \(socket.fd)") }
            copies.append(copy)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (index, copy) in copies.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, copy, SocketActivation.firstSocket + Int32(index))
        }
        // Nothing else: an fd this process inherited without close-on-exec
        // (one a supervisor watches for EOF, say) must not outlive it in the child.
        cepoll_spawn_close_from(&actions, end)
        // The child starts with no signal blocked, whatever this thread blocks.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        let passed = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"]
        var environment = currentEnvironment().filter { entry in !passed.contains { entry.hasPrefix($0 + "=") } }
        environment += [
            "LISTEN_FDS=\(sockets.count)", "LISTEN_FDNAMES=\(sockets.map(\.name).joined(separator: ":"))",
            "NOTIFY_SOCKET=\(notifySocket)",
        ]
        let argv = ["/bin/sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", executable] + arguments
        var pid = pid_t()
        let status = withCStrings(argv) { argv in
            withCStrings(environment) { envp in posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, envp) }
        }
        guard status == 0 else { throw SystemError("posix_spawn", executable, code: status) }
        return pid
    }

    private static func currentEnvironment() -> [String] {
        var entries: [String] = []
        var cursor = environ
        while let entry = cursor.pointee {
            entries.append(String(cString: entry))
            cursor += 1
        }
        return entries
    }

    /// Lends `strings` as a NULL-terminated C array of C strings.
    private static func withCStrings<Result>(
        _ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> Result
    ) -> Result {
        let pointers = strings.map { strdup($0) } + [nil]
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
