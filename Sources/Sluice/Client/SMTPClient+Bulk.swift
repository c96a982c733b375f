import Synchronization

extension SMTPClient {
    /// Sends every message of `mails` and returns their reports as they complete.
    ///
    /// At most `maximumInFlight` messages are handed to the client and not yet read from the
    /// returned sequence: when the consumer falls behind, `mails` is not iterated further
    /// (backpressure reaches the producer), so memory stays bounded for any number of
    /// messages. Reports come in completion order; ``DeliveryReport/messageID`` and
    /// ``DeliveryReport/envelope`` say which message each is about. A failed message is a
    /// report with an ``DeliveryReport/error``, never an error that ends the sequence;
    /// the sequence throws only what `mails` throws, after the messages before it report.
    ///
    /// Dropping the returned sequence (or cancelling the task iterating it) stops taking
    /// messages from `mails`; those already handed over still finish.
    public func send<Mails: AsyncSequence & Sendable>(contentsOf mails: Mails, maximumInFlight: Int = 1_000)
        -> DeliveryReports where Mails.Element == OutgoingMail
    {
        let bulk = BulkDelivery(limit: max(1, maximumInFlight))
        let producer = Task {
            do {
                for try await mail in mails {
                    guard await bulk.acquire() else { break }
                    submit(mail) { bulk.deliver($0) }
                }
                bulk.finish(error: nil)
            } catch {
                bulk.finish(error: error)
            }
        }
        return DeliveryReports(bulk: bulk, lifetime: ProducerLifetime(producer))
    }

    /// Sends every message of `mails` (see ``send(contentsOf:maximumInFlight:)-(Mails,_)``).
    public func send<Mails: Sequence & Sendable>(contentsOf mails: Mails, maximumInFlight: Int = 1_000)
        -> DeliveryReports where Mails.Element == OutgoingMail
    {
        let bulk = BulkDelivery(limit: max(1, maximumInFlight))
        let producer = Task {
            for mail in mails {
                guard await bulk.acquire() else { break }
                submit(mail) { bulk.deliver($0) }
            }
            bulk.finish(error: nil)
        }
        return DeliveryReports(bulk: bulk, lifetime: ProducerLifetime(producer))
    }
}

/// The reports of a bulk send, in completion order.
public struct DeliveryReports: AsyncSequence, Sendable {
    /// Each element is one message's report.
    public typealias Element = DeliveryReport

    fileprivate let bulk: BulkDelivery
    fileprivate let lifetime: ProducerLifetime

    /// Iterates the reports.
    public struct AsyncIterator: AsyncIteratorProtocol {
        fileprivate let bulk: BulkDelivery
        fileprivate let lifetime: ProducerLifetime

        /// The next report; nil when every message has reported.
        /// - Throws: What the input sequence threw, after every message before it reported.
        public mutating func next() async throws -> DeliveryReport? {
            try await withTaskCancellationHandler {
                try await bulk.next()
            } onCancel: { [lifetime, bulk] in
                lifetime.cancel()
                bulk.consumerCancelled()
            }
        }
    }

    /// An iterator over the reports.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bulk: bulk, lifetime: lifetime) }
}

/// Cancels the producer task when the last copy of the report sequence goes away.
private final class ProducerLifetime: Sendable {
    private let task: Task<Void, Never>
    init(_ task: Task<Void, Never>) { self.task = task }
    func cancel() { task.cancel() }
    deinit { task.cancel() }
}

/// The handoff between a bulk send's producer, the client's completions and the consumer.
private final class BulkDelivery: Sendable {
    private struct State {
        var limit: Int
        /// Handed to the client and not yet taken by the consumer.
        var inFlight = 0
        var ready: [DeliveryReport] = []
        var readyHead = 0
        var consumer: CheckedContinuation<DeliveryReport?, any Error>?
        var producer: CheckedContinuation<Bool, Never>?
        var producerFinished = false
        var inputError: (any Error)?
        var cancelled = false
    }

    private let state: Mutex<State>

    init(limit: Int) { state = Mutex(State(limit: limit)) }

    /// Waits for room for one more message; false once the consumer is gone.
    func acquire() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let answer = state.withLock { state -> Bool? in
                if state.cancelled || Task.isCancelled { return false }
                if state.inFlight < state.limit {
                    state.inFlight += 1
                    return true
                }
                state.producer = continuation
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    /// A message's report (from an event loop thread).
    func deliver(_ report: DeliveryReport) {
        let (consumer, producer) = state.withLock { state -> (CheckedContinuation<DeliveryReport?, any Error>?, CheckedContinuation<Bool, Never>?) in
            guard let consumer = state.consumer else {
                state.ready.append(report)
                return (nil, nil)
            }
            state.consumer = nil
            return (consumer, releaseSlot(&state))
        }
        consumer?.resume(returning: report)
        producer?.resume(returning: true)
    }

    /// The producer has no more messages (or its input failed).
    func finish(error: (any Error)?) {
        let consumer = state.withLock { state -> CheckedContinuation<DeliveryReport?, any Error>? in
            state.producerFinished = true
            state.inputError = error
            guard state.inFlight == 0, let consumer = state.consumer else { return nil }
            state.consumer = nil
            return consumer
        }
        if let error { consumer?.resume(throwing: error) } else { consumer?.resume(returning: nil) }
    }

    func next() async throws -> DeliveryReport? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<DeliveryReport?, any Error>) in
            enum Answer { case report(DeliveryReport), end, failure(any Error), wait }
            let (answer, producer) = state.withLock { state -> (Answer, CheckedContinuation<Bool, Never>?) in
                if state.readyHead < state.ready.count {
                    let report = state.ready[state.readyHead]
                    state.readyHead += 1
                    if state.readyHead == state.ready.count {
                        state.ready.removeAll(keepingCapacity: true)
                        state.readyHead = 0
                    }
                    return (.report(report), releaseSlot(&state))
                }
                if state.cancelled || (state.producerFinished && state.inFlight == 0) {
                    if let error = state.inputError {
                        state.inputError = nil
                        return (.failure(error), nil)
                    }
                    return (.end, nil)
                }
                state.consumer = continuation
                return (.wait, nil)
            }
            producer?.resume(returning: true)
            switch answer {
            case .report(let report): continuation.resume(returning: report)
            case .end: continuation.resume(returning: nil)
            case .failure(let error): continuation.resume(throwing: error)
            case .wait: break
            }
        }
    }

    /// The consuming task was cancelled: end its wait and stop the producer.
    func consumerCancelled() {
        let (consumer, producer) = state.withLock { state in
            state.cancelled = true
            defer {
                state.consumer = nil
                state.producer = nil
            }
            return (state.consumer, state.producer)
        }
        consumer?.resume(returning: nil)
        producer?.resume(returning: false)
    }

    /// One report was taken: room for one more message.
    private func releaseSlot(_ state: inout State) -> CheckedContinuation<Bool, Never>? {
        state.inFlight -= 1
        guard let producer = state.producer, state.inFlight < state.limit else { return nil }
        state.producer = nil
        state.inFlight += 1
        return producer
    }
}
