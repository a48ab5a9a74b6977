import Reactor

/// What a caller of `ProxyHeader.parse` relies on, checked on one input:
/// nil if all holds, else what broke. Shared by the tests (which replay the
/// fuzzing corpus) and the libFuzzer target (Fuzz/, through a symlink).
func proxyHeaderProblem(_ bytes: UnsafeRawBufferPointer) -> String? {
    let whole = ProxyHeader.parse(bytes)
    if case .complete(let header, let length) = whole {
        if length > bytes.count || length > ProxyHeader.maximumLength { return "header of \(length) B in \(bytes.count) B" }
        if header.version != 1 && header.version != 2 { return "version \(header.version)" }
        if ProxyHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[..<length])) != whole {
            return "the bytes after the header changed it"
        }
    }
    // What the reader sees first, a prefix, is complete only as the whole is.
    for cut in Set([bytes.count / 2, bytes.count - 1]) where cut >= 0 && cut < bytes.count {
        let prefix = ProxyHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[..<cut]))
        switch (prefix, whole) {
        case (.complete, _) where prefix != whole: return "prefix of \(cut) B parsed as \(prefix), the whole as \(whole)"
        case (.invalid, .complete), (.invalid, .incomplete): return "prefix of \(cut) B invalid, the whole not"
        default: continue
        }
    }
    return nil
}
