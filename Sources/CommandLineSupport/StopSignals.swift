#if canImport(Glibc)
import Glibc
#endif

/// Blocks SIGINT and SIGTERM (and `also`) in the calling thread, so every
/// thread started afterwards inherits the mask and the signals wait for
/// whoever takes them (a signalfd or sigwait), and returns that set.
///
/// A shell starts background jobs with SIGINT ignored, and an ignored signal
/// is discarded before a signalfd or sigwait can see it, so all go back to
/// the default action, which never runs while they are blocked.
public func blockStopSignals(also: [Int32] = []) -> sigset_t {
    var signals = sigset_t()
    sigemptyset(&signals)
    for number in [SIGINT, SIGTERM] + also {
        sigaddset(&signals, number)
        signal(number, SIG_DFL)
    }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    return signals
}
