/// A run's totals that count errors by kind and keep the first one's message.
protocol ErrorTotals {
    var firstError: String? { get set }
}

extension ErrorTotals {
    /// One more error of the kind `counter` counts; the message is made only for the first error.
    mutating func count(_ counter: WritableKeyPath<Self, Int>, _ message: () -> String) {
        self[keyPath: counter] += 1
        if firstError == nil { firstError = message() }
    }
}
