import Foundation
import SluiceTestSupport
import Testing

/// `sluice soak` as a user runs it: faults, accounting, resources and overload in one process.
@Suite("sluice soak")
struct SoakCommandTests {
    @Test func aShortSoakUnderEveryFaultProvesItsAccounting() async throws {
        guard let sluice = sluiceCommand() else { return }
        let command = memoryMeasuredCommand([sluice, "soak", "--duration", "8", "--rate", "300", "--overload-seconds", "2", "--json"])
        let run = try await withDeadline(.seconds(180), "sluice soak") {
            try await runInBackground(command[0], Array(command.dropFirst()))
        }
        #expect(run.status == 0, "\(run.output)\n\(run.error)")
        let result = try #require(JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        #expect(result["passed"] as? Bool == true)
        let checks = try #require(result["checks"] as? [[String: Any]])
        for check in checks {
            #expect(check["passed"] as? Bool == true, "\(check["name"] ?? "?"): \(check["detail"] ?? "")")
        }
        #expect(checks.count == 12, "every check ran, overload included")
        let outcomes = try #require(result["outcomes"] as? [String: Int])
        let given = try #require(result["given"] as? Int)
        // 2,400 at the rate asked; under AddressSanitizer beside the whole suite it has been 957.
        // What matters is enough traffic for every fault to fire, which the outcomes below show.
        #expect(given > 300)
        #expect(outcomes.values.reduce(0, +) == given)
        // The faults really fired: each kind of outcome they cause is there.
        for outcome in ["accepted", "partiallyAccepted", "rejected", "unknown"] {
            #expect((outcomes[outcome] ?? 0) > 0, "no \(outcome) outcome in \(outcomes)")
        }
        let stored = try #require(result["storedMessages"] as? Int)
        #expect(stored >= (outcomes["accepted"] ?? 0) + (outcomes["partiallyAccepted"] ?? 0))
        #expect(stored <= (outcomes["accepted"] ?? 0) + (outcomes["partiallyAccepted"] ?? 0) + (outcomes["unknown"] ?? 0))
        #expect((result["samples"] as? [Any])?.count ?? 0 >= 5, "resources were sampled through the run")
        #expect(run.error.contains("soak: overload"))
    }

    @Test(arguments: [["--duration", "0"], ["--connections", "0"], ["--overload-seconds", "-1"]])
    func badFlagsAreUsageErrors(arguments: [String]) async throws {
        guard let sluice = sluiceCommand() else { return }
        let run = try await runInBackground(sluice, ["soak"] + arguments)
        #expect(run.status == 64, "\(run.error)")
    }
}
