import SluiceCore

/// The connection pool's decisions, as a state machine: which connection takes a message,
/// when to open one, when to retire one (its message limit, its lifetime, its idle time),
/// when to back off, when the rate limit holds a message back, and when a connection that
/// sat idle should be checked before it is used. It does no I/O and reads no clock (every
/// event carries `now`, and it asks for a ``Action/wake(at:)`` when time alone will change
/// something); the client keeps it under a lock and carries out its actions after unlocking.
///
/// `Job` is the client's message handle; the machine only keeps and hands back references.
struct PoolStateMachine<Job: AnyObject> {
    struct Configuration {
        var maximumConnections: Int
        var maximumMessagesPerConnection: Int
        var maximumConnectionLifetime: Duration
        /// A connection idle this long is retired.
        var idleTimeout: Duration = .seconds(30)
        /// A connection idle this long is checked (RSET) before its next message.
        var checkAfterIdle: Duration = .seconds(1)
        /// Transactions one connection takes before its session says what it can do.
        var transactionsPerConnection: Int
        var connectAttempts: Int
        var connectBackoff: Backoff
        var rateLimit: SMTPClient.RateLimit?
        /// The first connection's ID; each next one is `connectionIDStride` more (pools that
        /// share a client number their connections apart).
        var firstConnectionID = 0
        var connectionIDStride = 1
    }

    /// What one event asks of the client, in order: usually none or one, held without an array.
    typealias Actions = FewElements<Action>

    enum Action {
        /// Open connection `id`.
        case connect(Int)
        /// Send the job on connection `id` (it is ready); `probeFirst` when the connection sat
        /// idle long enough that the server may have dropped it: check it first.
        case dispatch(Job, to: Int, probeFirst: Bool)
        /// Send QUIT on connection `id` once its work is done, and close it.
        case retire(Int)
        /// These waiting jobs cannot be sent: no connection could be made.
        case fail([Job], SMTPError)
        /// These waiting jobs cannot be sent from this pool (its connects failed), but
        /// another pool of the client has a ready connection: send them there.
        case handOff([Job])
        /// Call ``wake(now:)`` at this time (rate limit, connect backoff or an idle timeout).
        case wake(at: Moment)
        /// Shutting down and nothing is left: the client can stop.
        case drained
    }

    private enum ConnectionState {
        case connecting
        case ready(capacity: Int)
        /// QUIT was (or is about to be) sent; it takes nothing new.
        case retiring
    }

    private struct Entry {
        var state: ConnectionState
        var load = 0
        var sent = 0
        var openedAt: Moment
        /// When it last had nothing in flight (set while ``isIdle``).
        var idleSince: Moment?
        /// Its place in `byRoom[room]` while it is a candidate for new work, else -1.
        var slot = -1

        /// Ready, with a free slot by load (its message limit and lifetime aside).
        var hasFreeSlot: Bool {
            if case .ready(let capacity) = state { load < capacity } else { false }
        }

        /// Ready with nothing in flight: only such a connection can be retired.
        var isIdle: Bool {
            if case .ready = state { load == 0 } else { false }
        }
    }

    private let configuration: Configuration
    /// Messages in the order they came, from `waitingHead` on; the slots before it are
    /// emptied as their jobs are dispatched, so a dispatched job is never kept (nor freed)
    /// here, and the array is compacted only now and then.
    private var waiting: [Job?] = []
    private var waitingHead = 0
    /// Changed only through ``update(_:_:)``, ``insert(_:_:)`` and ``remove(_:)``, which keep
    /// the counts below: a busy pool's every message would otherwise scan every
    /// connection twice (measured at 100 connections: a fifth of the client's CPU).
    private var connections: [Int: Entry] = [:]
    /// Connections with ``Entry/hasFreeSlot``.
    private var freeSlotCount = 0
    /// Connections with ``Entry/isIdle``.
    private var idleCount = 0
    /// Transactions on connections (the sum of every entry's load).
    private var inFlightCount = 0
    /// The ready connections under their message limit with a free slot, by their room (their
    /// capacity less their load): picking the least loaded reads the highest non-empty row
    /// instead of every connection (at 10,000 connections that scan was a third of the
    /// client's CPU).
    private var byRoom: [[Int]] = []
    /// No idle connection's lifetime or idle time ends before this, and none went idle
    /// before `idleSinceBound`: lower bounds, lowered as connections go idle and made exact by
    /// each scan of the idle connections; nil while none is idle. Events other than a
    /// finished transaction scan every connection only once one of them may have expired.
    private var idleExpiryBound: Moment?
    private var idleSinceBound: Moment?
    private var connectingCount = 0
    private var nextConnectionID = 0
    private var consecutiveFailures = 0
    private var backoffUntil: Moment?
    private var wakeScheduledAt: Moment?
    private var tokens: Double
    private var tokensUpdatedAt: Moment?
    private var shuttingDown = false
    private var drainedReported = false
    private var random: () -> Double

    init(configuration: Configuration, random: @escaping () -> Double = { Double.random(in: 0..<1) }) {
        self.configuration = configuration
        self.random = random
        nextConnectionID = configuration.firstConnectionID
        tokens = Double(configuration.rateLimit?.burst ?? 0)
    }

    /// Messages waiting for a connection.
    var waitingCount: Int { waiting.count - waitingHead }

    /// Connections open or opening.
    var connectionCount: Int { connections.count }

    /// Messages waiting or on a connection.
    var load: Int { waitingCount + inFlightCount }

    /// Whether shutdown has begun.
    var isShuttingDown: Bool { shuttingDown }

    /// Whether a connection is ready (its session set up, whatever its load).
    var hasReadyConnection: Bool { connections.values.contains { if case .ready = $0.state { true } else { false } } }

    // MARK: Events

    /// A message to send.
    mutating func submitted(_ job: Job, now: Moment) -> Actions {
        waiting.append(job)
        return pump(now: now)
    }

    /// Messages that were handed to a connection and never started there: they go first.
    mutating func requeued(_ jobs: [Job], now: Moment) -> Actions {
        guard !jobs.isEmpty else { return [] }
        compactWaiting()
        waiting.insert(contentsOf: jobs.map(Optional.some), at: 0)
        return pump(now: now)
    }

    /// Removes a waiting message; false if it is not waiting (it is on a connection).
    mutating func cancelled(_ job: Job) -> Bool {
        guard let index = waiting[waitingHead...].firstIndex(where: { $0 === job }) else { return false }
        waiting.remove(at: index)
        return true
    }

    /// Connection `id`'s session is ready; it can take `capacity` transactions at once.
    mutating func connected(_ id: Int, capacity: Int, now: Moment) -> Actions {
        guard let entry = connections[id] else { return [] }
        if case .connecting = entry.state { connectingCount -= 1 }
        update(id) {
            $0.state = .ready(capacity: max(1, capacity))
            $0.idleSince = now
        }
        consecutiveFailures = 0
        backoffUntil = nil
        return pump(now: now)
    }

    /// Connection `id` could not be made (TCP, TLS, greeting, EHLO or AUTH failed).
    /// `readyElsewhere` says whether another pool of the client has a ready connection: then
    /// messages this pool cannot send for a transient failure go there instead of failing.
    mutating func connectFailed(_ id: Int, error: SMTPError, readyElsewhere: Bool,
                                now: Moment) -> Actions {
        guard let entry = remove(id) else { return [] }
        if case .connecting = entry.state { connectingCount -= 1 }
        consecutiveFailures += 1
        var actions: Actions = []
        if !error.isTransient || (consecutiveFailures >= configuration.connectAttempts && !hasReadyConnection) {
            // Every waiting message would meet the same failure here.
            let failed = waiting[waitingHead...].map { $0! }
            waiting = []
            waitingHead = 0
            consecutiveFailures = 0
            backoffUntil = nil
            if !failed.isEmpty { actions.append(error.isTransient && readyElsewhere ? .handOff(failed) : .fail(failed, error)) }
        } else {
            backoffUntil = now + configuration.connectBackoff.delay(afterAttempt: consecutiveFailures, random: random())
        }
        actions += pump(now: now)
        return actions
    }

    /// A transaction on connection `id` finished (whatever its outcome).
    /// Waiting work goes to that connection first: it is on the thread reporting this, so
    /// the work needs no hop to another loop.
    mutating func transactionFinished(on id: Int, now: Moment) -> Actions {
        guard connections[id] != nil else { return pump(now: now) }
        update(id) {
            $0.load -= 1
            if $0.load == 0 { $0.idleSince = now }
        }
        return pump(now: now, preferring: id)
    }

    /// Connection `id` closed (after QUIT, or because it failed after its session was ready).
    mutating func connectionClosed(_ id: Int, now: Moment) -> Actions {
        if case .connecting? = remove(id)?.state { connectingCount -= 1 }
        return pump(now: now)
    }

    /// A time asked for with ``Action/wake(at:)`` has come.
    mutating func wake(now: Moment) -> Actions {
        wakeScheduledAt = nil
        return pump(now: now)
    }

    /// Takes nothing new from now on; what is waiting and in flight still goes. Every
    /// connection is retired once the work is done.
    mutating func shutdownRequested(now: Moment) -> Actions {
        shuttingDown = true
        return pump(now: now)
    }

    // MARK: Decisions

    private mutating func pump(now: Moment, preferring preferred: Int? = nil) -> Actions {
        var actions: Actions = []
        // A busy pool's events are mostly finished transactions: only that connection can
        // have reached a limit, so only it is checked. Other events check every connection,
        // but only while one is idle: nothing else can be retired.
        if let preferred {
            retireIfExpired(preferred, now: now, into: &actions)
        } else if idleCount > 0, let bound = idleExpiryBound, now >= bound {
            for id in connections.keys { retireIfExpired(id, now: now, into: &actions) }
            recomputeIdleBounds()
        }
        dispatchWaiting(now: now, preferring: preferred, into: &actions)
        openConnectionsIfNeeded(now: now, into: &actions)
        if shuttingDown, waitingCount == 0 {
            for (id, entry) in connections where entry.isIdle {
                update(id) { $0.state = .retiring }
                actions.append(.retire(id))
            }
            if connections.isEmpty, !drainedReported {
                drainedReported = true
                actions.append(.drained)
            }
        }
        if idleCount > 0 { scheduleIdleWake(preferring: preferred, into: &actions) }
        assert(countsAreRight, "the pool's counts of free and idle connections went wrong")
        return actions
    }

    /// Retires connection `id` if it is idle and reached its message limit, its lifetime or
    /// its idle time.
    private mutating func retireIfExpired(_ id: Int, now: Moment, into actions: inout Actions) {
        guard let entry = connections[id], entry.isIdle else { return }
        if entry.sent >= configuration.maximumMessagesPerConnection
            || now - entry.openedAt >= configuration.maximumConnectionLifetime
            || entry.idleSince.map({ now - $0 >= configuration.idleTimeout }) == true {
            update(id) { $0.state = .retiring }
            actions.append(.retire(id))
        }
    }

    private mutating func dispatchWaiting(now: Moment, preferring preferred: Int?,
                                          into actions: inout Actions) {
        while waitingHead < waiting.count {
            let id: Int
            if let preferred, hasRoom(preferred, now: now) {
                id = preferred
            } else if let leastLoaded = leastLoadedConnection(now: now) {
                id = leastLoaded
            } else {
                break
            }
            guard takeToken(now: now, into: &actions) else { break }
            let job = waiting[waitingHead]!
            waiting[waitingHead] = nil
            waitingHead += 1
            var probeFirst = false
            let checkAfterIdle = configuration.checkAfterIdle
            update(id) {
                if let since = $0.idleSince, $0.load == 0 {
                    probeFirst = now - since >= checkAfterIdle
                }
                $0.idleSince = nil
                $0.load += 1
                $0.sent += 1
            }
            actions.append(.dispatch(job, to: id, probeFirst: probeFirst))
        }
        if waitingHead == waiting.count {
            waiting.removeAllKeepingCapacity()
            waitingHead = 0
        } else if waitingHead > 1024, waitingHead * 2 > waiting.count {
            compactWaiting()
        }
    }

    /// The ready connection with the most room, if any has room.
    private func leastLoadedConnection(now: Moment) -> Int? {
        guard freeSlotCount > 0 else { return nil }
        for room in byRoom.indices.reversed() {
            // Last in, first out: the row's end is what it last took in. Only a connection
            // past its lifetime (still busy, so not yet retired) is passed over.
            for id in byRoom[room].reversed() where hasRoom(connections[id]!, now: now) { return id }
        }
        return nil
    }

    /// When an idle connection's lifetime or idle time ends.
    private func idleExpiry(_ entry: Entry) -> Moment {
        let lifetimeEnds = entry.openedAt + configuration.maximumConnectionLifetime
        guard let since = entry.idleSince else { return lifetimeEnds }
        return min(lifetimeEnds, since + configuration.idleTimeout)
    }

    /// Makes the idle bounds exact again.
    private mutating func recomputeIdleBounds() {
        idleExpiryBound = nil
        idleSinceBound = nil
        for entry in connections.values where entry.isIdle { lowerIdleBounds(entry) }
    }

    private mutating func lowerIdleBounds(_ entry: Entry) {
        let expiry = idleExpiry(entry)
        idleExpiryBound = idleExpiryBound.map { min($0, expiry) } ?? expiry
        if let since = entry.idleSince { idleSinceBound = idleSinceBound.map { min($0, since) } ?? since }
    }

    /// Whether connection `id` is ready and can take one more transaction now.
    private func hasRoom(_ id: Int, now: Moment) -> Bool {
        connections[id].map { hasRoom($0, now: now) } ?? false
    }

    /// Whether a connection is ready and can take one more transaction now. A connection past
    /// its message limit or lifetime takes nothing new.
    private func hasRoom(_ entry: Entry, now: Moment) -> Bool {
        isCandidate(entry) && now - entry.openedAt < configuration.maximumConnectionLifetime
    }

    /// Opens connections while waiting messages outnumber what the connections being
    /// opened will take, within the limit and outside a backoff.
    private mutating func openConnectionsIfNeeded(now: Moment, into actions: inout Actions) {
        guard waitingCount > 0 else { return }
        if let until = backoffUntil, now < until {
            scheduleWake(at: until, into: &actions)
            return
        }
        while connections.count < configuration.maximumConnections,
              waitingCount > connectingCount * configuration.transactionsPerConnection {
            let id = nextConnectionID
            nextConnectionID += configuration.connectionIDStride
            insert(id, Entry(state: .connecting, openedAt: now))
            connectingCount += 1
            actions.append(.connect(id))
            // After a failure, one connect at a time until one succeeds.
            if consecutiveFailures > 0 { break }
        }
    }

    /// Takes a token from the rate limiter, or schedules a wake for when one will be there.
    private mutating func takeToken(now: Moment, into actions: inout Actions) -> Bool {
        guard let limit = configuration.rateLimit else { return true }
        if let last = tokensUpdatedAt {
            tokens = min(Double(limit.burst), tokens + (now - last).seconds * limit.messagesPerSecond)
        }
        tokensUpdatedAt = now
        // Refills add up in floating point (ten 0.1s make 0.9999999999999999): a token a
        // billionth short is a whole one, or a wake-up every 10 ms would lose one in ten.
        if tokens >= 1 - 1e-9 {
            tokens = max(0, tokens - 1)
            return true
        }
        let wait = (1 - tokens) / limit.messagesPerSecond
        scheduleWake(at: now + .nanoseconds(Int64((wait * 1e9).rounded(.up))), into: &actions)
        return false
    }

    /// Asks to be woken when the first idle connection's idle time is up: the connection that
    /// just went idle's (a later one's is later than any asked for already), or after a scan,
    /// the earliest.
    private mutating func scheduleIdleWake(preferring preferred: Int?, into actions: inout Actions) {
        let earliest: Moment?
        if let preferred {
            earliest = connections[preferred].flatMap { $0.isIdle ? $0.idleSince : nil }
        } else {
            // A bound at worst early: the wake it asks for scans and asks again, exactly.
            earliest = idleSinceBound
        }
        if let earliest { scheduleWake(at: earliest + configuration.idleTimeout, into: &actions) }
    }

    private mutating func scheduleWake(at instant: Moment, into actions: inout Actions) {
        if let scheduled = wakeScheduledAt, scheduled <= instant { return }
        wakeScheduledAt = instant
        actions.append(.wake(at: instant))
    }

    // MARK: Entries

    /// Changes connection `id`'s entry (which must exist), keeping the counts.
    private mutating func update(_ id: Int, _ change: (inout Entry) -> Void) {
        let index = connections.index(forKey: id)!  // one hash, not three
        forget(id, connections.values[index])
        change(&connections.values[index])
        connections.values[index].slot = count(id, connections.values[index])
    }

    private mutating func insert(_ id: Int, _ entry: Entry) {
        var entry = entry
        entry.slot = count(id, entry)
        connections[id] = entry
    }

    private mutating func remove(_ id: Int) -> Entry? {
        guard let entry = connections.removeValue(forKey: id) else { return nil }
        forget(id, entry)
        return entry
    }

    /// Recounts (debug builds check this after every event).
    private var countsAreRight: Bool {
        freeSlotCount == connections.values.count(where: \.hasFreeSlot)
            && idleCount == connections.values.count(where: \.isIdle)
            && inFlightCount == connections.values.reduce(0) { $0 + $1.load }
            && byRoom.enumerated().allSatisfy { room, ids in
                ids.enumerated().allSatisfy { slot, id in
                    connections[id].map { $0.slot == slot && isCandidate($0) && self.room($0) == room } ?? false
                }
            }
            && byRoom.reduce(0) { $0 + $1.count } == connections.values.count(where: isCandidate)
            && connections.values.filter(\.isIdle).allSatisfy { entry in
                idleExpiryBound.map { $0 <= idleExpiry(entry) } == true
                    && (entry.idleSince == nil || idleSinceBound.map { $0 <= entry.idleSince! } == true)
            }
    }

    /// Whether a connection can be picked for new work (its lifetime aside): ready, with a
    /// free slot, under its message limit.
    private func isCandidate(_ entry: Entry) -> Bool {
        entry.hasFreeSlot && entry.sent < configuration.maximumMessagesPerConnection
    }

    private func room(_ entry: Entry) -> Int {
        if case .ready(let capacity) = entry.state { capacity - entry.load } else { 0 }
    }

    /// Counts connection `id`'s entry in; returns its place in `byRoom`, for its `slot`.
    private mutating func count(_ id: Int, _ entry: Entry) -> Int {
        if entry.hasFreeSlot { freeSlotCount += 1 }
        if entry.isIdle {
            idleCount += 1
            lowerIdleBounds(entry)
        }
        inFlightCount += entry.load
        if isCandidate(entry) {
            let room = room(entry)
            while byRoom.count <= room { byRoom.append([]) }
            byRoom[room].append(id)
            return byRoom[room].count - 1
        }
        return -1
    }

    private mutating func forget(_ id: Int, _ entry: Entry) {
        if entry.hasFreeSlot { freeSlotCount -= 1 }
        if entry.isIdle {
            idleCount -= 1
            if idleCount == 0 { (idleExpiryBound, idleSinceBound) = (nil, nil) }
        }
        inFlightCount -= entry.load
        if entry.slot >= 0 {
            // Out of its row: the row's last connection takes its place.
            let room = room(entry)
            let last = byRoom[room].removeLast()
            if last != id {
                byRoom[room][entry.slot] = last
                connections[last]!.slot = entry.slot
            }
        }
    }

    private mutating func compactWaiting() {
        guard waitingHead > 0 else { return }
        waiting.removeFirst(waitingHead)
        waitingHead = 0
    }
}
