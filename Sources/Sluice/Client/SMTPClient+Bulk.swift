public import Logging
public import SluiceMIME
import SluiceTransport

extension SMTPClient {
    /// Sends every message of `mails` and returns their reports as they complete.
    ///
    /// At most `maximumInFlight` messages are with the client at once, and at most
    /// `maximumInFlight` reports wait for the consumer: when the consumer falls behind, `mails`
    /// is not iterated further (backpressure reaches the producer), so memory stays bounded
    /// for any number of messages. Reports come in completion order;
    /// ``DeliveryReport/messageID`` and ``DeliveryReport/envelope`` say which message each is
    /// about. A failed message is a report with an ``DeliveryReport/error``, never an error
    /// that ends the sequence.
    ///
    /// The next message is taken from `mails` on the thread that finished the one before, so a
    /// steady stream needs no thread handoff per message. `mails` is iterated by one thread
    /// at a time, and must not block. Reports reach the consumer in batches (waking a task
    /// costs more than sending a message): at once when a quarter of `maximumInFlight` have
    /// finished or nothing is left in flight, otherwise within about two milliseconds.
    ///
    /// Dropping the returned sequence (or cancelling the task iterating it) stops taking
    /// messages from `mails`; those already handed over still finish.
    ///
    /// `logger` and, with a tracer, the calling task's trace context follow every message, as
    /// in ``send(_:envelope:logger:)-(EncodedMessage,_,_)``: a span per message, each a child of
    /// the caller's.
    public func send<Mails: Sequence & Sendable>(contentsOf mails: Mails, maximumInFlight: Int = 1_000,
                                                 logger: Logger? = nil)
        -> DeliveryReports where Mails.Element == OutgoingMail
    {
        let iterator = IteratorBox(mails.makeIterator())
        let bulk = BulkDelivery(client: self, limit: max(1, maximumInFlight), source: .pull { iterator.next() },
                                logger: logger, context: .current)
        Task { bulk.refill() }
        return DeliveryReports(bulk: bulk, lifetime: BulkLifetime(bulk: bulk, producer: nil))
    }

    /// Sends `message` to each of `recipients` in a copy of its own (see
    /// ``OutgoingMail/init(personalizing:for:unsubscribe:dkim:)``): its own `To`, its own
    /// `Message-ID` and, with `unsubscribe`, its own one-click unsubscribe link; each signed
    /// with the configured DKIM signers. Reports come as ``send(contentsOf:maximumInFlight:logger:)-871l``
    /// gives them, one a recipient.
    ///
    /// - Throws: ``SMTPError`` of kind ``SMTPError/Kind/invalidInput`` when the first copy
    ///   cannot be made (the message itself is wrong), before anything is sent. A later copy
    ///   that cannot be made is reported with that error, never dropped.
    public func send<Recipients: Collection & Sendable>(_ message: Message, toEach recipients: Recipients,
                                                      unsubscribe: UnsubscribeLinks? = nil, maximumInFlight: Int = 1_000,
                                                      logger: Logger? = nil)
        throws(SMTPError) -> DeliveryReports where Recipients.Element == Mailbox
    {
        if let first = recipients.first {
            _ = try OutgoingMail(personalizing: message, for: first, unsubscribe: unsubscribe, dkim: configuration.dkim)
        }
        let dkim = configuration.dkim
        return send(contentsOf: recipients.lazy.map { recipient in
            do throws(SMTPError) {
                return try OutgoingMail(personalizing: message, for: recipient, unsubscribe: unsubscribe, dkim: dkim)
            } catch {
                var mail = OutgoingMail(envelope: Envelope(from: nil, to: [recipient.address]), message: Self.emptyMessage)
                mail.problem = error
                return mail
            }
        }, maximumInFlight: maximumInFlight, logger: logger)
    }

    /// The content of a copy that could not be made: never sent. (No bytes: no NUL and no
    /// long line, so preparing it cannot fail.)
    private static let emptyMessage = try! EncodedMessage(bytes: [], messageID: nil)

    /// Sends every message of an asynchronous sequence and returns their reports as they
    /// complete (see ``send(contentsOf:maximumInFlight:logger:)-871l``); the sequence ends by
    /// throwing what `mails` throws, after every message taken before it has reported.
    public func send<Mails: AsyncSequence & Sendable>(contentsOf mails: Mails, maximumInFlight: Int = 1_000,
                                                      logger: Logger? = nil)
        -> DeliveryReports where Mails.Element == OutgoingMail
    {
        let bulk = BulkDelivery(client: self, limit: max(1, maximumInFlight), source: .push,
                                logger: logger, context: .current)
        let producer = Task {
            do {
                for try await mail in mails {
                    guard await bulk.acquire() else { break }
                    submit(mail, logger: logger, context: bulk.context) { bulk.deliver($0) }
                }
                bulk.sourceEnded(error: nil)
            } catch {
                bulk.sourceEnded(error: error)
            }
        }
        return DeliveryReports(bulk: bulk, lifetime: BulkLifetime(bulk: bulk, producer: producer))
    }
}

/// The reports of a bulk send, in completion order.
public struct DeliveryReports: AsyncSequence, Sendable {
    /// Each element is one message's report.
    public typealias Element = DeliveryReport

    fileprivate let bulk: BulkDelivery
    fileprivate let lifetime: BulkLifetime

    /// Iterates the reports, taking every report that is ready at once.
    public struct AsyncIterator: AsyncIteratorProtocol {
        fileprivate let bulk: BulkDelivery
        fileprivate let lifetime: BulkLifetime
        /// The reports taken and not yet returned, last first: each is moved out with
        /// `popLast()` rather than copied (a report holds a dozen references).
        private var batch: [DeliveryReport] = []

        fileprivate init(bulk: BulkDelivery, lifetime: BulkLifetime) {
            self.bulk = bulk
            self.lifetime = lifetime
        }

        /// The next report; nil when every message has reported.
        /// - Throws: What an asynchronous input sequence threw, after every message before it reported.
        public mutating func next() async throws -> DeliveryReport? {
            if batch.isEmpty {
                batch = try await withTaskCancellationHandler {
                    try await bulk.nextBatch()
                } onCancel: { [lifetime] in
                    lifetime.cancel()
                }
                // In place (the batch arrives as the only reference to its storage), through the
                // buffer, whose swaps move the reports; Array's own swaps copy them (a retain
                // and a release of each of a report's references).
                batch.withUnsafeMutableBufferPointer { $0.reverse() }
            }
            return batch.popLast()
        }
    }

    /// An iterator over the reports.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bulk: bulk, lifetime: lifetime) }
}

/// Stops the bulk send when the last copy of its report sequence goes away.
private final class BulkLifetime: Sendable {
    private let bulk: BulkDelivery
    private let producer: Task<Void, Never>?
    init(bulk: BulkDelivery, producer: Task<Void, Never>?) {
        self.bulk = bulk
        self.producer = producer
    }
    func cancel() {
        producer?.cancel()
        bulk.cancel()
    }
    deinit { cancel() }
}

/// A synchronous iterator any thread may pull from, one at a time.
private final class IteratorBox<Iterator: IteratorProtocol>: @unchecked Sendable where Iterator.Element == OutgoingMail {
    // `iterator` needs no lock of its own: BulkDelivery lets one thread pull at a time, and
    // its state lock orders each pull after the one before (a pull is reserved under the
    // lock, and the reservation is given back under it once the pull has returned).
    private var iterator: Iterator
    init(_ iterator: Iterator) { self.iterator = iterator }
    func next() -> OutgoingMail? { iterator.next() }
}

/// The handoff between a bulk send's source, the client's completions and the consumer.
private final class BulkDelivery: Sendable {
    /// The consumer task, waiting for reports.
    typealias Consumer = Waiter<[DeliveryReport], any Error>
    /// The producer task of an asynchronous source, waiting for room.
    typealias Producer = Waiter<Bool, Never>

    enum Source: Sendable {
        /// Pulled here, from whichever thread has room for one more.
        case pull(@Sendable () -> OutgoingMail?)
        /// Pushed by a producer task that waits in ``acquire()``.
        case push
    }

    private struct State {
        let limit: Int
        /// Handed to the client and not yet reported.
        var inFlight = 0
        /// Reported and not yet taken by the consumer.
        var ready: [DeliveryReport] = []
        var consumer: Consumer?
        var producer: Producer?
        /// A thread is pulling from the source (only one at a time).
        var pulling = false
        var sourceEnded = false
        var sourceError: (any Error)?
        var cancelled = false
        /// A wake of the waiting consumer is due at the end of a loop iteration.
        var wakeAtEndOfIteration = false
        /// A wake of the waiting consumer is due when ``BulkDelivery/wakeDelay`` is up.
        var wakeOnTimer = false

        /// Reports that wake a waiting consumer at the end of the loop's iteration; fewer
        /// wait for ``BulkDelivery/wakeDelay``.
        var wakeBatch: Int { max(1, limit / 4) }

        var hasRoom: Bool { !cancelled && !sourceEnded && inFlight < limit && ready.count < limit }
        var isFinished: Bool { (sourceEnded || cancelled) && inFlight == 0 && !pulling }

        /// Takes room for one more message if there is room and no thread is pulling: the
        /// caller then pulls from the source (which only one thread may do at a time).
        mutating func reservePull() -> Bool {
            guard hasRoom, !pulling else { return false }
            pulling = true
            inFlight += 1
            return true
        }
    }

    private let client: SMTPClient
    private let source: Source
    private let state: Locked<State>

    /// The caller's logger and trace context, for every message (see
    /// ``SMTPClient/send(_:envelope:logger:)-(EncodedMessage,_,_)``).
    let logger: Logger?
    let context: HandoverContext

    init(client: SMTPClient, limit: Int, source: Source, logger: Logger?, context: HandoverContext) {
        self.client = client
        self.source = source
        self.logger = logger
        self.context = context
        state = Locked(State(limit: limit))
    }

    /// Hands the client as many messages as there is room for.
    func refill() {
        switch source {
        case .push:
            let producer = state.withLock { state -> Producer? in
                guard state.hasRoom, let producer = state.producer else { return nil }
                state.producer = nil
                state.inFlight += 1
                return producer
            }
            producer?.resume(returning: true)
        case .pull(let pull):
            pullAndSubmit(from: pull, reserved: state.withLock { $0.reservePull() })
        }
    }

    /// Pulls messages and hands them to the client while there is room, starting with the
    /// one `reserved` already took room for. Giving back one pull's reservation and taking
    /// the next is one trip through the lock.
    private func pullAndSubmit(from source: @Sendable () -> OutgoingMail?, reserved: Bool) {
        var reserved = reserved
        while reserved {
            let mail = source()  // user code: outside the lock
            let (consumer, batch, next) = state.withLock {
                state -> (Consumer?, [DeliveryReport], Bool) in
                state.pulling = false
                guard mail != nil else {
                    state.inFlight -= 1
                    state.sourceEnded = true
                    // The end: a waiting consumer takes the last reports (or learns it is over)
                    // now rather than when a batched wake comes.
                    guard state.isFinished, let consumer = state.consumer else { return (nil, [], false) }
                    state.consumer = nil
                    defer { state.ready = [] }
                    return (consumer, state.ready, false)
                }
                return (nil, [], state.reservePull())
            }
            guard let mail else {
                consumer?.resume(returning: batch)
                return
            }
            client.submit(mail, logger: logger, context: context) { self.deliver($0) }
            reserved = next
        }
    }

    /// The producer task waits here for room for one more message; false once the
    /// consumer is gone.
    func acquire() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let answer = state.withLock { state -> Bool? in
                if state.cancelled { return false }
                if state.hasRoom {
                    state.inFlight += 1
                    return true
                }
                state.producer = Producer(continuation)
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    /// The producer task's sequence ended (or threw).
    func sourceEnded(error: (any Error)?) {
        let consumer = state.withLock { state -> Consumer? in
            state.sourceEnded = true
            state.sourceError = error
            return takeConsumerIfFinished(&state)
        }
        finish(consumer)
    }

    /// How long a report finished on a loop may wait for others before the consumer is woken.
    static let wakeDelay: Duration = .milliseconds(1)

    private enum Wake { case atEndOfIteration, onTimer }

    /// A message's report (on an event loop thread, or wherever the job ended).
    ///
    /// Waking a task costs more than the rest of a message's work (a semaphore post, a
    /// thread woken and put back to sleep), so on a loop thread the waiting consumer is woken
    /// once per batch: at the end of the loop's iteration once a quarter of the in-flight
    /// limit has reported or nothing is left in flight, otherwise when ``wakeDelay`` is up.
    /// A report thus waits at most about two milliseconds (the loop's timers have millisecond
    /// resolution) for its consumer.
    func deliver(_ report: consuming DeliveryReport) {
        let loop = EventLoop.current
        let pullSource: (@Sendable () -> OutgoingMail?)? = if case .pull(let pull) = source { pull } else { nil }
        var report = Optional(report)  // moved into `ready` under the lock, not copied
        // The report, the consumer's wake and the room it frees for the next pull: one lock.
        let (consumer, batch, wake, reserved) = state.withLock {
            state -> (Consumer?, [DeliveryReport], Wake?, Bool) in
            state.inFlight -= 1
            // Grown once per batch, not by doubling from one report each time it is handed over.
            if state.ready.capacity == 0 { state.ready.reserveCapacity(state.wakeBatch) }
            state.ready.append(report.take()!)
            let reserved = pullSource != nil && state.reservePull()
            guard let consumer = state.consumer else { return (nil, [], nil, reserved) }
            if loop != nil {
                if state.ready.count >= state.wakeBatch || state.inFlight == 0 {
                    defer { state.wakeAtEndOfIteration = true }
                    return (nil, [], state.wakeAtEndOfIteration ? nil : .atEndOfIteration, reserved)
                }
                defer { state.wakeOnTimer = true }
                return (nil, [], state.wakeOnTimer ? nil : .onTimer, reserved)
            }
            state.consumer = nil
            defer { state.ready = [] }
            return (consumer, state.ready, nil, reserved)
        }
        if let loop, let wake {
            switch wake {
            case .atEndOfIteration: loop.deferToEndOfIteration { self.wakeConsumer(.atEndOfIteration) }
            case .onTimer: loop.scheduleTimer(after: Self.wakeDelay) { self.wakeConsumer(.onTimer) }
            }
        }
        consumer?.resume(returning: batch)
        if let pullSource {
            pullAndSubmit(from: pullSource, reserved: reserved)
        } else {
            refill()
        }
    }

    private func wakeConsumer(_ wake: Wake) {
        let (consumer, batch) = state.withLock { state -> (Consumer?, [DeliveryReport]) in
            switch wake {
            case .atEndOfIteration: state.wakeAtEndOfIteration = false
            case .onTimer: state.wakeOnTimer = false
            }
            guard let consumer = state.consumer, !state.ready.isEmpty else { return (nil, []) }
            state.consumer = nil
            defer { state.ready = [] }
            return (consumer, state.ready)
        }
        consumer?.resume(returning: batch)
    }

    /// Every report ready now, waiting for one if none is; empty at the end.
    func nextBatch() async throws -> [DeliveryReport] {
        let batch = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[DeliveryReport], any Error>) in
            enum Answer { case batch([DeliveryReport]), failure(any Error), wait }
            let answer = state.withLock { state -> Answer in
                if !state.ready.isEmpty {
                    defer { state.ready = [] }
                    return .batch(state.ready)
                }
                if state.isFinished {
                    if let error = state.sourceError {
                        state.sourceError = nil
                        return .failure(error)
                    }
                    return .batch([])
                }
                state.consumer = Consumer(continuation)
                return .wait
            }
            switch answer {
            case .batch(let batch): continuation.resume(returning: batch)
            case .failure(let error): continuation.resume(throwing: error)
            case .wait: break
            }
        }
        refill()  // the consumer made room
        return batch
    }

    /// The consumer is gone or cancelled: take nothing more; end its wait once the messages
    /// already handed over have finished.
    func cancel() {
        let (consumer, producer) = state.withLock { state in
            state.cancelled = true
            defer { state.producer = nil }
            return (takeConsumerIfFinished(&state), state.producer)
        }
        producer?.resume(returning: false)
        finish(consumer)
    }

    private func takeConsumerIfFinished(_ state: inout State) -> Consumer? {
        guard state.isFinished, state.ready.isEmpty, let consumer = state.consumer else { return nil }
        state.consumer = nil
        return consumer
    }

    private func finish(_ consumer: Consumer?) {
        guard let consumer else { return }
        let error = state.withLock { state -> (any Error)? in
            defer { state.sourceError = nil }
            return state.sourceError
        }
        if let error { consumer.resume(throwing: error) } else { consumer.resume(returning: []) }
    }
}

/// A waiting task's continuation, boxed. `CheckedContinuation` is not `@frozen`: held in
/// ``BulkDelivery``'s state, it gave the whole state (read and written under the lock for
/// every message) a layout known only at run time, so each access went through runtime
/// metadata. A reference has a layout the compiler knows.
private final class Waiter<Value: Sendable, Failure: Error>: Sendable {
    private let continuation: CheckedContinuation<Value, Failure>
    init(_ continuation: CheckedContinuation<Value, Failure>) { self.continuation = continuation }
    func resume(returning value: sending Value) { continuation.resume(returning: value) }
    func resume(throwing error: Failure) { continuation.resume(throwing: error) }
}
