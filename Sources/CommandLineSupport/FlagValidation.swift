import ArgumentParser

/// Rejects a flag value outside `range` with a message that names the flag
/// and the range; ArgumentParser exits 64 (EX_USAGE) with it.
public func check<Value: Comparable>(_ flag: String, _ value: Value, _ range: ClosedRange<Value>) throws {
    guard range.contains(value) else {
        throw ValidationError("\(flag) must be in \(range.lowerBound)...\(range.upperBound) (got \(value))")
    }
}
