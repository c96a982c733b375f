import Foundation
import Histogram

/// `sluice bench --report FILE`: one self-contained HTML file (no script, no network) with
/// the run's throughput and latency percentiles second by second, its latency percentile
/// spectrum, its failures and its settings. The charts are SVG drawn here; the figures they
/// are drawn from are also in the file as JSON (`<script type="application/json"
/// id="sluice-bench-data">`), for tools.
enum BenchReport {
    /// The report for `result`, whose seconds are `seconds`.
    static func html(_ result: BenchResult, seconds: [TimeSeries.Second], generated: Date = Date()) -> String {
        let throughput = Chart(
            title: "Throughput", xLabel: "second of the run", yLabel: "messages / s",
            series: [
                .init(name: "accepted", color: "#2a7ab0", points: seconds.map { (Double($0.second), Double($0.accepted)) }),
                .init(name: "not accepted", color: "#c0392b",
                      points: seconds.map { (Double($0.second), Double($0.messages - $0.accepted)) }),
            ])
        let latency = Chart(
            title: "Latency by second", xLabel: "second of the run", yLabel: "milliseconds",
            series: [("p50", "#2a7ab0"), ("p90", "#27ae60"), ("p99", "#e67e22"), ("max", "#c0392b")].map { key, color in
                .init(name: key, color: color,
                      points: seconds.filter { $0.messages > 0 }.map { (Double($0.second), $0.latency[key] ?? 0) })
            })
        let spectrumPoints = spectrum(result.tally.latency)
        let spectrumChart = Chart(
            title: "Latency by percentile", xLabel: "percentile", yLabel: "milliseconds",
            series: [.init(name: "latency", color: "#8e44ad", points: spectrumPoints.map { (nines($0.percentile), $0.milliseconds) })],
            xTicks: [0, 90, 99, 99.9, 99.99, 99.999].map { (nines($0), "\($0 == 0 ? "0" : String(format: "%g", $0))%") })

        var body = ""
        body += "<h1>sluice bench → \(escape(result.target))</h1>\n"
        body += "<p class=\"summary\">\(escape(result.headline))</p>\n"
        body += "<div class=\"charts\">\n" + throughput.svg + latency.svg + spectrumChart.svg + "</div>\n"
        body += "<h2>Failures</h2>\n" + failuresTable(result)
        body += "<h2>Settings and results</h2>\n<table class=\"settings\">\n"
        for line in result.text.split(separator: "\n").dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            body += "<tr><th>\(escape(parts[0]))</th><td>\(escape(parts.count > 1 ? parts[1] : ""))</td></tr>\n"
        }
        body += "</table>\n"
        body += "<p class=\"generated\">Made by sluice bench on \(escape(ISO8601DateFormatter().string(from: generated))).</p>\n"

        let data: [String: Any] = [
            "result": (try? JSONSerialization.jsonObject(with: Data(result.json.utf8))) ?? [:],
            "seconds": seconds.map(\.json),
            "spectrum": spectrumPoints.map { ["percentile": $0.percentile, "milliseconds": $0.milliseconds] },
        ]
        let json = String(decoding: (try? JSONSerialization.data(withJSONObject: data, options: [.sortedKeys])) ?? Data("{}".utf8),
                          as: UTF8.self)
            .replacingOccurrences(of: "<", with: "\\u003c")  // nothing in it can end the script element

        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>sluice bench → \(escape(result.target))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
            h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
            .summary { color: #555; margin: 0 0 16px; }
            .charts { display: flex; flex-wrap: wrap; gap: 16px; }
            svg { background: #fff; border: 1px solid #ddd; }
            svg text { font: 12px system-ui, sans-serif; fill: #333; }
            svg .title { font-size: 14px; font-weight: 600; }
            svg .grid { stroke: #eee; } svg .axis { stroke: #999; }
            table { border-collapse: collapse; } th, td { text-align: left; padding: 3px 12px 3px 0; vertical-align: top; }
            th { font-weight: 600; white-space: nowrap; } .none { color: #27ae60; } .generated { color: #888; font-size: 12px; }
            </style></head>
            <body>
            \(body)<script type="application/json" id="sluice-bench-data">\(json)</script>
            </body></html>

            """
    }

    /// Writes the report to `path`.
    static func write(_ result: BenchResult, seconds: [TimeSeries.Second], to path: String) throws {
        do {
            try html(result, seconds: seconds).write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw BenchReportError(path: path, reason: error.localizedDescription)
        }
    }

    /// Latency at percentiles spaced evenly in "nines" (0, 68.4, 90, 96.8, 99, … 99.999),
    /// then the maximum: HdrHistogram's percentile distribution, as its plotter draws it.
    static func spectrum(_ histogram: Histogram<UInt64>) -> [(percentile: Double, milliseconds: Double)] {
        guard histogram.totalCount > 0 else { return [] }
        var points = (0...50).map { step -> (Double, Double) in
            let percentile = 100 * (1 - pow(10, -Double(step) / 10))
            return (percentile, Double(histogram.valueAtPercentile(percentile)) / 1000)
        }
        points.append((100, Double(histogram.max) / 1000))
        return points
    }

    /// A percentile's position on the spectrum's axis: its count of nines, log10(1/(1 - p)),
    /// with 100% drawn one step past 99.999%.
    static func nines(_ percentile: Double) -> Double {
        percentile >= 100 ? 5.2 : log10(1 / (1 - percentile / 100))
    }

    private static func failuresTable(_ result: BenchResult) -> String {
        guard !result.tally.failures.isEmpty else { return "<p class=\"none\">Every message was accepted.</p>\n" }
        var table = "<table class=\"failures\">\n<tr><th>where and with what</th><th>messages</th><th>share</th></tr>\n"
        for (key, count) in result.tally.failures.sorted(by: { ($1.value, $0.key) < ($0.value, $1.key) }) {
            table += "<tr><td>\(escape(key))</td><td>\(count.grouped)</td><td>"
                + String(format: "%.2f%%", 100 * Double(count) / Double(max(1, result.tally.count))) + "</td></tr>\n"
        }
        if let first = result.tally.firstError { table += "<tr><td colspan=\"3\">first error: \(escape(first))</td></tr>\n" }
        return table + "</table>\n"
    }

    /// `text` safe in HTML text and attribute values.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default:
                // Controls (a hostile server's text may carry them) are shown, not passed on.
                if character.value < 0x20 && character != "\n" && character != "\t" || character.value == 0x7F {
                    escaped += String(format: "\\x%02X", character.value)
                } else {
                    escaped.unicodeScalars.append(character)
                }
            }
        }
        return escaped
    }
}

/// The report could not be written.
struct BenchReportError: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String { "--report: cannot write \(path): \(reason)" }
}

/// A line chart drawn as SVG: the axes from 0 (or the data's least x) to rounded maxima,
/// a grid, a legend, and one polyline a series.
struct Chart {
    struct Series {
        let name: String
        let color: String
        let points: [(Double, Double)]
    }

    let title: String
    let xLabel: String
    let yLabel: String
    let series: [Series]
    /// Ticks at these x values with these labels, instead of evenly spaced numbers.
    var xTicks: [(Double, String)]?

    static let width = 540.0
    static let height = 300.0
    static let margin = (left: 64.0, right: 16.0, top: 36.0, bottom: 64.0)

    var svg: String {
        let all = series.flatMap(\.points)
        let xs = all.map(\.0) + (xTicks?.map(\.0) ?? [])
        let minimumX = xs.min() ?? 0
        let maximumX = max(xs.max() ?? 1, minimumX + 1)
        let (yStep, maximumY) = Self.niceScale(all.map(\.1).max() ?? 0)
        let left = Self.margin.left, top = Self.margin.top
        let plotWidth = Self.width - left - Self.margin.right
        let plotHeight = Self.height - top - Self.margin.bottom
        func x(_ value: Double) -> Double { left + (value - minimumX) / (maximumX - minimumX) * plotWidth }
        func y(_ value: Double) -> Double { top + plotHeight - value / maximumY * plotHeight }
        func f(_ value: Double) -> String { String(format: "%.1f", value) }

        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(Self.width))\" height=\"\(Int(Self.height))\" "
            + "viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\" role=\"img\" aria-label=\"\(BenchReport.escape(title))\">\n"
        svg += "<text class=\"title\" x=\"\(f(left))\" y=\"20\">\(BenchReport.escape(title))</text>\n"
        var tick = 0.0
        while tick <= maximumY + yStep / 2 {
            svg += "<line class=\"grid\" x1=\"\(f(left))\" x2=\"\(f(left + plotWidth))\" y1=\"\(f(y(tick)))\" y2=\"\(f(y(tick)))\"/>"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y(tick) + 4))\" text-anchor=\"end\">\(Self.label(tick))</text>\n"
            tick += yStep
        }
        let ticks = xTicks ?? {
            let (step, _) = Self.niceScale(maximumX - minimumX, targetTicks: 8)
            return stride(from: minimumX, through: maximumX + step / 2, by: step).map { ($0, Self.label($0)) }
        }()
        for (value, text) in ticks where value <= maximumX + 1e-9 {
            svg += "<line class=\"axis\" x1=\"\(f(x(value)))\" x2=\"\(f(x(value)))\" y1=\"\(f(top + plotHeight))\" "
                + "y2=\"\(f(top + plotHeight + 4))\"/><text x=\"\(f(x(value)))\" y=\"\(f(top + plotHeight + 18))\" "
                + "text-anchor=\"middle\">\(BenchReport.escape(text))</text>\n"
        }
        svg += "<line class=\"axis\" x1=\"\(f(left))\" x2=\"\(f(left + plotWidth))\" y1=\"\(f(top + plotHeight))\" y2=\"\(f(top + plotHeight))\"/>"
        svg += "<line class=\"axis\" x1=\"\(f(left))\" x2=\"\(f(left))\" y1=\"\(f(top))\" y2=\"\(f(top + plotHeight))\"/>\n"
        svg += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(Self.height - 30))\" text-anchor=\"middle\">\(BenchReport.escape(xLabel))</text>\n"
        svg += "<text transform=\"translate(14 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(BenchReport.escape(yLabel))</text>\n"
        var legendX = left
        for line in series {
            let points = line.points.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ")
            svg += "<polyline class=\"series\" data-series=\"\(BenchReport.escape(line.name))\" fill=\"none\" stroke=\"\(line.color)\" "
                + "stroke-width=\"2\" points=\"\(points)\"/>\n"
            svg += "<rect x=\"\(f(legendX))\" y=\"\(f(Self.height - 14))\" width=\"12\" height=\"4\" fill=\"\(line.color)\"/>"
                + "<text x=\"\(f(legendX + 16))\" y=\"\(f(Self.height - 8))\">\(BenchReport.escape(line.name))</text>\n"
            legendX += 24 + Double(line.name.count) * 7.5
        }
        return svg + "</svg>\n"
    }

    /// A step of 1, 2 or 5 times a power of ten giving about `targetTicks` ticks up to at
    /// least `maximum`, and that rounded-up maximum.
    static func niceScale(_ maximum: Double, targetTicks: Double = 5) -> (step: Double, maximum: Double) {
        guard maximum > 0, maximum.isFinite else { return (1, 1) }
        let rough = maximum / targetTicks
        let power = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= rough } ?? 10 * power
        return (step, (maximum / step).rounded(.up) * step)
    }

    /// A tick's number: whole where it is whole, else with the few decimals it needs.
    static func label(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return Int(value).grouped }
        return String(format: "%g", value)
    }
}
