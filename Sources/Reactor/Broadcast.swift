extension EventLoop {
    /// Queues `buffer` for each of `connections`, as `Connection.enqueue`
    /// does, with one thread check for all of them: a broadcast's delivery
    /// to the members on this loop. Every connection must live on this
    /// loop, and the call must come from its thread.
    ///
    /// `aboveHighWaterMark` hears each connection whose pending output is
    /// above the high-water mark with this buffer (it is queued all the
    /// same); it may close that connection.
    public func enqueue(
        _ buffer: SharedBuffer, to connections: [Connection], aboveHighWaterMark: (Connection) -> Void
    ) {
        precondition(isCurrent, "EventLoop.enqueue(_:to:) off its loop's thread: call it in eventLoop.execute { }")
        for connection in connections {
            precondition(connection.lives(on: self), "EventLoop.enqueue(_:to:) given a connection of another loop")
            if !enqueue(buffer, to: connection.token) { aboveHighWaterMark(connection) }
        }
    }
}
