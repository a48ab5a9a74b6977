import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// Starting the process that takes over a listening socket, as systemd
/// would start it: the socket as fd 3, `LISTEN_FDS=1` and `LISTEN_PID` its
/// own pid, and `NOTIFY_SOCKET` for its `READY=1`.
public enum SuccessorProcess {
    /// Starts `executable` with `arguments` and returns its pid. The rest of
    /// this process's environment goes with it, and stdin, stdout and
    /// stderr; no other fd does. `LISTEN_PID` must be the child's own pid, known only
    /// once it runs: a `/bin/sh` sets it and execs the executable in its place.
    public static func spawn(
        _ executable: String, arguments: [String], listeningSocket: Int32, notifySocket: String
    ) throws(SystemError) -> pid_t {
        // A copy above 3, so that dup2 onto 3 always makes a new fd, without close-on-exec.
        let copy = fcntl(listeningSocket, F_DUPFD_CLOEXEC, SocketActivation.firstSocket + 1)
        guard copy >= 0 else { throw SystemError("fcntl(F_DUPFD_CLOEXEC)", "fd \(listeningSocket)") }
        defer { close(copy) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, copy, SocketActivation.firstSocket)
        // Nothing else: an fd this process inherited without close-on-exec
        // (one a supervisor watches for EOF, say) must not outlive it in the child.
        cepoll_spawn_close_from(&actions, SocketActivation.firstSocket + 1)
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
        environment += ["LISTEN_FDS=1", "LISTEN_FDNAMES=listener", "NOTIFY_SOCKET=\(notifySocket)"]
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
