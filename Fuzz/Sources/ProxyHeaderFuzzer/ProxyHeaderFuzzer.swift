/// libFuzzer's entry (its main drives it): a broken invariant is a crash,
/// which libFuzzer reports with the input that caused it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyHeader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    if let problem = proxyHeaderProblem(UnsafeRawBufferPointer(start: data, count: size)) { fatalError(problem) }
    return 0
}
