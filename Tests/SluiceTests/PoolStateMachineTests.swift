@testable import Sluice
import Testing

/// The pool's decisions, driven directly: a fake job, explicit moments, no sockets. Each test
/// reads the actions one event returns, as the client would carry them out.
@Suite("PoolStateMachine")
struct PoolStateMachineTests {
    final class Job: CustomStringConvertible {
        let name: String
        init(_ name: String) { self.name = name }
        var description: String { name }
    }

    typealias Pool = PoolStateMachine<Job>

    static let start = Moment(nanoseconds: 1_000_000_000_000)

    static func configuration(connections: Int = 2, perConnection: Int = 8, messagesPerConnection: Int = 1_000,
                              lifetime: Duration = .seconds(600), idleTimeout: Duration = .seconds(30),
                              connectAttempts: Int = 3, rateLimit: SMTPClient.RateLimit? = nil) -> Pool.Configuration {
        Pool.Configuration(maximumConnections: connections, maximumMessagesPerConnection: messagesPerConnection,
                           maximumConnectionLifetime: lifetime, idleTimeout: idleTimeout, checkAfterIdle: .seconds(1),
                           transactionsPerConnection: perConnection,
                           connectAttempts: connectAttempts,
                           connectBackoff: Backoff(initial: .milliseconds(100), maximum: .seconds(1)),
                           rateLimit: rateLimit)
    }

    /// What one event asked for, by kind.
    struct Asked {
        var connects: [Int] = []
        var dispatches: [(job: String, connection: Int)] = []
        /// The jobs dispatched with a check of their idle connection first.
        var probed: [String] = []
        var retires: [Int] = []
        var failed: [String] = []
        var failure: SMTPError?
        var handedOff: [String] = []
        var wakes: [Moment] = []
        var drained = false

        init(_ actions: Pool.Actions) {
            for action in actions {
                switch action {
                case .connect(let id): connects.append(id)
                case .dispatch(let job, let id, let probeFirst):
                    dispatches.append((job.name, id))
                    if probeFirst { probed.append(job.name) }
                case .retire(let id): retires.append(id)
                case .fail(let jobs, let error):
                    failed += jobs.map(\.name)
                    failure = error
                case .handOff(let jobs): handedOff += jobs.map(\.name)
                case .wake(let moment): wakes.append(moment)
                case .drained: drained = true
                }
            }
        }

        var dispatchedJobs: [String] { dispatches.map(\.job) }
    }

    @Test func connectionsOpenLazilyOnlyAsWaitingWorkNeedsThemAndWithinTheLimit() {
        var pool = Pool(configuration: Self.configuration(connections: 3, perConnection: 2))
        #expect(pool.connectionCount == 0, "nothing opens before the first message")
        let first = Asked(pool.submitted(Job("a"), now: Self.start))
        #expect(first.connects == [0])
        #expect(Asked(pool.submitted(Job("b"), now: Self.start)).connects.isEmpty, "one connecting connection takes two")
        #expect(Asked(pool.submitted(Job("c"), now: Self.start)).connects == [1])
        for name in ["d", "e", "f", "g", "h"] { _ = pool.submitted(Job(name), now: Self.start) }
        #expect(pool.connectionCount == 3, "never more than the limit")
        #expect(pool.waitingCount == 8)
    }

    @Test func aReadyConnectionTakesWorkUpToItsCapacityAndTheRestWaits() {
        var pool = Pool(configuration: Self.configuration(connections: 1))
        for name in ["a", "b", "c", "d"] { _ = pool.submitted(Job(name), now: Self.start) }
        let ready = Asked(pool.connected(0, capacity: 3, now: Self.start))
        #expect(ready.dispatchedJobs == ["a", "b", "c"], "in the order they came")
        #expect(pool.waitingCount == 1)
        let finished = Asked(pool.transactionFinished(on: 0, now: Self.start))
        #expect(finished.dispatches.map(\.job) == ["d"] && finished.dispatches.first?.connection == 0)
    }

    @Test func waitingJobsAreDispatchedFirstComeFirstServedAcrossConnections() {
        var pool = Pool(configuration: Self.configuration(connections: 2, perConnection: 1))
        for index in 0..<6 { _ = pool.submitted(Job("m\(index)"), now: Self.start) }
        let one = Asked(pool.connected(0, capacity: 1, now: Self.start))
        let two = Asked(pool.connected(1, capacity: 1, now: Self.start))
        #expect(one.dispatchedJobs == ["m0"] && two.dispatchedJobs == ["m1"])
        var order: [String] = []
        for round in 0..<4 { order += Asked(pool.transactionFinished(on: round % 2, now: Self.start)).dispatchedJobs }
        #expect(order == ["m2", "m3", "m4", "m5"], "no job overtakes one that waited longer")
    }

    @Test func aConnectionIsRetiredAtItsMessageLimitOnceIdle() {
        var pool = Pool(configuration: Self.configuration(connections: 1, messagesPerConnection: 2))
        for name in ["a", "b", "c"] { _ = pool.submitted(Job(name), now: Self.start) }
        #expect(Asked(pool.connected(0, capacity: 8, now: Self.start)).dispatchedJobs == ["a", "b"])
        #expect(Asked(pool.transactionFinished(on: 0, now: Self.start)).retires.isEmpty, "still busy")
        let idle = Asked(pool.transactionFinished(on: 0, now: Self.start))
        #expect(idle.retires == [0], "idle at its limit: retired")
        #expect(idle.dispatches.isEmpty, "a retiring connection takes nothing new")
        let closed = Asked(pool.connectionClosed(0, now: Self.start))
        #expect(closed.connects == [1], "the waiting job gets a new connection")
    }

    @Test func aConnectionPastItsLifetimeTakesNothingNewAndIsRetiredWhenIdle() {
        var pool = Pool(configuration: Self.configuration(connections: 1, lifetime: .seconds(10)))
        _ = pool.submitted(Job("a"), now: Self.start)
        _ = pool.connected(0, capacity: 8, now: Self.start)
        let later = Self.start + .seconds(11)
        let submitted = Asked(pool.submitted(Job("b"), now: later))
        #expect(submitted.dispatches.isEmpty, "past its lifetime")
        let finished = Asked(pool.transactionFinished(on: 0, now: later))
        #expect(finished.retires == [0])
    }

    @Test func theIdleTimeIsThePoolsToKeepAndAnIdleConnectionIsRetiredWhenItIsUp() {
        var pool = Pool(configuration: Self.configuration(connections: 1, idleTimeout: .seconds(30)))
        _ = pool.submitted(Job("a"), now: Self.start)
        _ = pool.connected(0, capacity: 8, now: Self.start)
        // Idle at +5 s: the pool asks to be woken when its idle time is up.
        #expect(Asked(pool.transactionFinished(on: 0, now: Self.start + .seconds(5))).wakes == [Self.start + .seconds(35)])
        // Work at +20 s, idle again at +21 s: the wake already asked for comes first.
        #expect(Asked(pool.submitted(Job("b"), now: Self.start + .seconds(20))).dispatchedJobs == ["b"])
        #expect(Asked(pool.transactionFinished(on: 0, now: Self.start + .seconds(21))).wakes.isEmpty)
        // At +35 s it has been idle 14 s: kept, and the next wake is at +51 s.
        let early = Asked(pool.wake(now: Self.start + .seconds(35)))
        #expect(early.retires.isEmpty, "work arrived meanwhile")
        #expect(early.wakes == [Self.start + .seconds(51)])
        let woken = Asked(pool.wake(now: Self.start + .seconds(51)))
        #expect(woken.retires == [0], "idle 30 s")
        #expect(Asked(pool.submitted(Job("c"), now: Self.start + .seconds(52))).dispatches.isEmpty, "a retiring connection takes nothing")
    }

    @Test func aConnectionIdleLongerThanTheCheckIsProbedBeforeItsNextMessage() {
        var pool = Pool(configuration: Self.configuration(connections: 1))
        _ = pool.submitted(Job("a"), now: Self.start)
        let first = Asked(pool.connected(0, capacity: 8, now: Self.start))
        #expect(first.dispatchedJobs == ["a"] && first.probed.isEmpty, "a new session needs no check")
        _ = pool.transactionFinished(on: 0, now: Self.start + .milliseconds(10))
        let soon = Asked(pool.submitted(Job("b"), now: Self.start + .milliseconds(500)))
        #expect(soon.dispatchedJobs == ["b"] && soon.probed.isEmpty, "idle half a second")
        #expect(Asked(pool.submitted(Job("c"), now: Self.start + .seconds(3))).probed.isEmpty, "busy: not idle")
        _ = pool.transactionFinished(on: 0, now: Self.start + .seconds(4))
        _ = pool.transactionFinished(on: 0, now: Self.start + .seconds(4))
        let late = Asked(pool.submitted(Job("d"), now: Self.start + .seconds(6)))
        #expect(late.probed == ["d"], "idle two seconds, past the check")
    }

    @Test func aConnectionTheServerClosedWhileIdleIsForgottenAndWorkOpensAnother() {
        var pool = Pool(configuration: Self.configuration(connections: 1))
        _ = pool.submitted(Job("a"), now: Self.start)
        _ = pool.connected(0, capacity: 8, now: Self.start)
        _ = pool.transactionFinished(on: 0, now: Self.start)
        #expect(Asked(pool.connectionClosed(0, now: Self.start)).connects.isEmpty, "nothing waits")
        #expect(pool.connectionCount == 0)
        #expect(Asked(pool.submitted(Job("b"), now: Self.start)).connects == [1])
    }

    @Test func transientConnectFailuresBackOffThenFailTheWaitingJobsAfterTheLastAttempt() {
        var pool = Pool(configuration: Self.configuration(connections: 2, connectAttempts: 2), random: { 0.5 })
        _ = pool.submitted(Job("a"), now: Self.start)
        let refused = SMTPError(.connection, "refused", isTransient: true)
        let first = Asked(pool.connectFailed(0, error: refused, readyElsewhere: false, now: Self.start))
        #expect(first.failed.isEmpty && first.connects.isEmpty, "backing off")
        #expect(first.wakes == [Self.start + .milliseconds(100)], "woken when the backoff ends")
        let early = Asked(pool.wake(now: Self.start + .milliseconds(50)))
        #expect(early.connects.isEmpty, "not before the backoff ends")
        let woken = Asked(pool.wake(now: Self.start + .milliseconds(100)))
        #expect(woken.connects == [1], "one connect at a time after a failure")
        let last = Asked(pool.connectFailed(1, error: refused, readyElsewhere: false, now: Self.start + .milliseconds(100)))
        #expect(last.failed == ["a"], "after the last attempt the waiting job fails")
        #expect(pool.waitingCount == 0)
    }

    @Test func afterAConnectFailureConnectionsOpenOneAtATimeUntilOneSucceeds() {
        var pool = Pool(configuration: Self.configuration(connections: 3, perConnection: 1, connectAttempts: 10),
                        random: { 0.5 })
        for index in 0..<5 { _ = pool.submitted(Job("m\(index)"), now: Self.start) }
        #expect(pool.connectionCount == 3)
        let refused = SMTPError(.connection, "refused", isTransient: true)
        var wake = Self.start
        for id in 0..<3 { wake = Asked(pool.connectFailed(id, error: refused, readyElsewhere: false, now: Self.start)).wakes.last ?? wake }
        // Follow the wake-ups the pool asks for until the backoff is over.
        var woken = Asked(pool.wake(now: wake))
        for _ in 0..<5 where woken.connects.isEmpty {
            wake = try! #require(woken.wakes.last)
            woken = Asked(pool.wake(now: wake))
        }
        #expect(woken.connects.count == 1, "one probe, not three: \(woken.connects)")
        let recovered = Asked(pool.connected(woken.connects[0], capacity: 1, now: wake))
        #expect(recovered.connects.count == 2, "once one succeeds the pool opens up to its limit again")
    }

    @Test func aPermanentConnectFailureFailsEveryWaitingJobAtOnceAndATransientOneCanGoElsewhere() {
        var pool = Pool(configuration: Self.configuration(connections: 2))
        for name in ["a", "b"] { _ = pool.submitted(Job(name), now: Self.start) }
        let denied = SMTPError(.authentication, "535", isTransient: false)
        let asked = Asked(pool.connectFailed(0, error: denied, readyElsewhere: true, now: Self.start))
        #expect(asked.failed == ["a", "b"] && asked.handedOff.isEmpty, "another pool would fail the same way")
        #expect(asked.failure?.kind == .authentication)

        var other = Pool(configuration: Self.configuration(connections: 1, connectAttempts: 1))
        _ = other.submitted(Job("c"), now: Self.start)
        let refused = SMTPError(.connection, "refused", isTransient: true)
        #expect(Asked(other.connectFailed(0, error: refused, readyElsewhere: true, now: Self.start)).handedOff == ["c"])
    }

    @Test func theTokenBucketNeverLetsMoreThanTheBurstPlusTheRateThrough() {
        let limit = SMTPClient.RateLimit(messagesPerSecond: 10, burst: 3)
        var pool = Pool(configuration: Self.configuration(connections: 1, rateLimit: limit))
        for index in 0..<50 { _ = pool.submitted(Job("m\(index)"), now: Self.start) }
        var dispatched = Asked(pool.connected(0, capacity: 100, now: Self.start)).dispatches.count
        #expect(dispatched == 3, "the burst at once")
        // Wake every 10 ms for two seconds, as the client would when asked.
        var now = Self.start
        var perWindow: [Int] = []
        for step in 1...200 {
            now = Self.start + .milliseconds(10 * step)
            let count = Asked(pool.wake(now: now)).dispatches.count
            dispatched += count
            perWindow.append(count)
            // At any moment: no more than the burst plus the rate times the time elapsed.
            #expect(Double(dispatched) <= 3 + 10 * Double(10 * step) / 1000 + 1e-9, "at \(step * 10) ms: \(dispatched)")
        }
        #expect(dispatched == 23, "3 at once, then 10 a second for 2 s")
        #expect(perWindow.allSatisfy { $0 <= 1 }, "never a burst again while it was spent")
    }

    @Test func aRateLimitedPoolAsksToBeWokenWhenTheNextTokenIsDue() {
        let limit = SMTPClient.RateLimit(messagesPerSecond: 4, burst: 1)
        var pool = Pool(configuration: Self.configuration(connections: 1, rateLimit: limit))
        for name in ["a", "b"] { _ = pool.submitted(Job(name), now: Self.start) }
        let ready = Asked(pool.connected(0, capacity: 8, now: Self.start))
        #expect(ready.dispatchedJobs == ["a"])
        #expect(ready.wakes == [Self.start + .milliseconds(250)])
        #expect(Asked(pool.wake(now: Self.start + .milliseconds(250))).dispatchedJobs == ["b"])
    }

    @Test func shutdownSendsWhatWaitsThenRetiresEveryConnectionAndReportsDrainedOnce() {
        var pool = Pool(configuration: Self.configuration(connections: 1))
        _ = pool.submitted(Job("a"), now: Self.start)
        _ = pool.connected(0, capacity: 8, now: Self.start)
        _ = pool.submitted(Job("b"), now: Self.start)
        let shutdown = Asked(pool.shutdownRequested(now: Self.start))
        #expect(shutdown.retires.isEmpty && !shutdown.drained, "work is still in flight")
        _ = pool.transactionFinished(on: 0, now: Self.start)
        let idle = Asked(pool.transactionFinished(on: 0, now: Self.start))
        #expect(idle.retires == [0])
        let closed = Asked(pool.connectionClosed(0, now: Self.start))
        #expect(closed.drained)
        #expect(!Asked(pool.wake(now: Self.start)).drained, "reported once")
    }

    /// Many connections, random events, against a model of the rules: each message goes to the
    /// connection it finished on while that one has room, otherwise to one with the most room;
    /// nothing goes to a connection at its message limit or past its lifetime; and after each
    /// event, no idle connection whose time is up is left unretired.
    @Test(arguments: [1, 2, 3])
    func amongManyConnectionsWorkGoesWhereTheRulesSayAndExpiredIdleConnectionsAreRetired(seed: UInt64) {
        struct SplitMix {
            var state: UInt64
            mutating func next(_ bound: Int) -> Int {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return Int((z ^ (z >> 31)) % UInt64(bound))
            }
        }
        struct Model {
            var capacity: Int?  // nil while connecting
            var retiring = false
            var load = 0
            var sent = 0
            var openedAt: Moment
            var idleSince: Moment?
        }
        let (limit, lifetime, idleTimeout) = (25, Duration.seconds(60), Duration.seconds(5))
        var pool = Pool(configuration: Self.configuration(connections: 40, perConnection: 4, messagesPerConnection: limit,
                                                          lifetime: lifetime, idleTimeout: idleTimeout))
        var random = SplitMix(state: seed)
        var model: [Int: Model] = [:]
        var now = Self.start
        var jobs = 0
        func hasRoom(_ entry: Model) -> Bool {
            guard let capacity = entry.capacity, !entry.retiring else { return false }
            return entry.load < capacity && entry.sent < limit && now - entry.openedAt < lifetime
        }
        func isExpiredIdle(_ entry: Model) -> Bool {
            guard entry.capacity != nil, !entry.retiring, entry.load == 0 else { return false }
            return entry.sent >= limit || now - entry.openedAt >= lifetime
                || entry.idleSince.map { now - $0 >= idleTimeout } == true
        }
        for step in 0..<4_000 {
            now = now + .milliseconds(random.next(300))
            let finished = model.filter { $0.value.load > 0 }.keys.sorted()
            let connecting = model.filter { $0.value.capacity == nil }.keys.sorted()
            let retired = model.filter { $0.value.retiring }.keys.sorted()
            let actions: Pool.Actions
            var preferred: Int?
            switch random.next(10) {
            case 0...3:
                jobs += 1
                actions = pool.submitted(Job("m\(jobs)"), now: now)
            case 4...6 where !finished.isEmpty:
                let id = finished[random.next(finished.count)]
                model[id]!.load -= 1
                if model[id]!.load == 0 { model[id]!.idleSince = now }
                preferred = id
                actions = pool.transactionFinished(on: id, now: now)
            case 7 where !connecting.isEmpty:
                let id = connecting[random.next(connecting.count)]
                let capacity = 1 + random.next(6)
                model[id]!.capacity = capacity
                model[id]!.idleSince = now
                actions = pool.connected(id, capacity: capacity, now: now)
            case 8 where !retired.isEmpty:
                let id = retired[random.next(retired.count)]
                model[id] = nil
                actions = pool.connectionClosed(id, now: now)
            default:
                actions = pool.wake(now: now)
            }
            for action in actions {
                switch action {
                case .connect(let id):
                    #expect(model[id] == nil, "step \(step): connection \(id) opened twice")
                    model[id] = Model(openedAt: now)
                case .dispatch(_, let id, _):
                    let entry = model[id]!
                    #expect(hasRoom(entry), "step \(step): connection \(id) took work without room: \(entry)")
                    if let preferred, hasRoom(model[preferred]!) {
                        #expect(id == preferred, "step \(step): the connection that finished has room")
                    } else {
                        let most = model.values.filter(hasRoom).map { $0.capacity! - $0.load }.max()
                        #expect(entry.capacity! - entry.load == most, "step \(step): \(id) is not among the least loaded")
                    }
                    model[id]!.load += 1
                    model[id]!.sent += 1
                    model[id]!.idleSince = nil
                case .retire(let id):
                    #expect(isExpiredIdle(model[id]!), "step \(step): \(id) retired before its time: \(model[id]!)")
                    model[id]!.retiring = true
                case .fail, .handOff, .drained:
                    Issue.record("step \(step): \(action)")
                case .wake:
                    break
                }
            }
            let checked = preferred.map { [$0] } ?? Array(model.keys)
            for id in checked where isExpiredIdle(model[id]!) {
                Issue.record("step \(step): connection \(id) is idle past its time and was not retired: \(model[id]!)")
            }
        }
        #expect(jobs > 1_000 && model.count > 10, "the run reached a busy pool: \(jobs) jobs, \(model.count) connections")
    }
}
