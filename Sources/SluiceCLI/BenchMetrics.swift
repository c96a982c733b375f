import Histogram
import Metrics
import Sluice
import SluiceTransport
import Synchronization

/// The bench's metrics backend: it counts the client's connections opened and closed (the
/// live line's "open") and keeps a histogram of each phase of opening a session
/// (`smtp.client.connection.setup.duration`) and of each transaction
/// (`smtp.client.transaction.duration`); every other metric goes nowhere.
final class BenchMetrics: MetricsFactory, Sendable {
    private let opened = Tally()
    private let closed = Tally()
    private let phases = (ClientStateMachine.SetupPhase.allCases.map(\.rawValue) + ["envelope", "data"]).map(PhaseTimer.init)

    /// Connections open now.
    var open: Int { max(0, opened.value.load(ordering: .relaxed) - closed.value.load(ordering: .relaxed)) }

    /// Each phase that occurred, in the order a session and a transaction go through them,
    /// with its latencies in microseconds.
    var phaseLatencies: [(phase: String, latency: Histogram<UInt64>)] {
        phases.compactMap { timer in
            let histogram = timer.histogram.withLock { $0 }
            return histogram.totalCount == 0 ? nil : (timer.phase, histogram)
        }
    }

    final class Tally: CounterHandler, Sendable {
        let value = Atomic<Int>(0)
        func increment(by amount: Int64) { value.add(Int(amount), ordering: .relaxed) }
        func reset() { value.store(0, ordering: .relaxed) }
    }

    final class PhaseTimer: TimerHandler, Sendable {
        let phase: String
        let histogram = Locked(Histogram<UInt64>.latencies())

        init(_ phase: String) { self.phase = phase }

        func recordNanoseconds(_ duration: Int64) {
            histogram.withLock { $0.record(latency: .nanoseconds(duration)) }
        }
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        switch label {
        case "smtp.client.connections.opened": opened
        case "smtp.client.connections.closed": closed
        default: NOOPMetricsHandler.instance
        }
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let key = label == "smtp.client.connection.setup.duration" ? "smtp.setup.phase"
            : label == "smtp.client.transaction.duration" ? "smtp.transaction.phase" : nil
        guard let key, let name = dimensions.first(where: { $0.0 == key })?.1, let timer = phases.first(where: { $0.phase == name })
        else { return NOOPMetricsHandler.instance }
        return timer
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        NOOPMetricsHandler.instance
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler { NOOPMetricsHandler.instance }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance
    }

    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}
