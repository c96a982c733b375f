/// One asynchronous operation on a loop, bridged to Swift concurrency.
///
/// The continuation is stored and resumed on the loop thread only, and resumed exactly once:
/// ``succeed(_:)`` and ``fail(_:)`` after the first are ignored. Task cancellation arrives as
/// a job on the same loop, so it is ordered with the operation's own start.
final class LoopOperation<Value: Sendable>: @unchecked Sendable {
    // Every field is touched on `loop`'s thread only (asserted).
    let loop: EventLoop
    private var continuation: CheckedContinuation<Value, any Error>?
    private var finished = false
    private var cancelled = false
    /// What to do if the task is cancelled while the operation runs: undo the work. The
    /// operation is failed with `CancellationError` right after this runs, unless it already
    /// finished.
    var onCancel: (() -> Void)?

    init(loop: EventLoop) { self.loop = loop }

    /// Whether the operation has finished (succeeded, failed or been cancelled).
    var isFinished: Bool {
        loop.assertInEventLoop()
        return finished
    }

    func succeed(_ value: Value) { finish(.success(value)) }

    func fail(_ error: any Error) { finish(.failure(error)) }

    /// Resumes the continuation with `result`, the first time only.
    private func finish(_ result: Result<Value, any Error>) {
        loop.assertInEventLoop()
        guard !finished else { return }
        finished = true
        onCancel = nil
        continuation?.resume(with: result)
        continuation = nil
    }

    fileprivate func attach(_ continuation: CheckedContinuation<Value, any Error>) -> Bool {
        loop.assertInEventLoop()
        self.continuation = continuation
        if cancelled {
            fail(CancellationError())
            return false
        }
        return true
    }

    fileprivate func cancel() {
        loop.assertInEventLoop()
        cancelled = true
        guard continuation != nil, !finished else { return }
        let undo = onCancel
        onCancel = nil
        undo?()
        fail(CancellationError())
    }
}

extension EventLoop {
    /// Runs `start` on this loop and suspends until the operation it begins calls
    /// ``LoopOperation/succeed(_:)`` or ``LoopOperation/fail(_:)``, which must happen when the
    /// work is done, not when it is queued. Cancelling the task runs the operation's
    /// `onCancel` on the loop and throws `CancellationError`.
    ///
    /// Throws ``TransportError/Kind/eventLoopShutDown`` if the loop no longer takes work.
    func perform<Value: Sendable>(
        _ what: String,
        _ start: @escaping @Sendable (LoopOperation<Value>) -> Void
    ) async throws -> Value {
        let operation = LoopOperation<Value>(loop: self)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = execute {
                    if operation.attach(continuation) { start(operation) }
                }
                if !accepted {
                    continuation.resume(throwing: TransportError(.eventLoopShutDown, "\(what): event loop \(index) is shut down"))
                }
            }
        } onCancel: {
            execute { operation.cancel() }
        }
    }
}
