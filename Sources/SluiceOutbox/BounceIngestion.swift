import Foundation
public import Sluice
import SluiceMIME
import SluiceTransport

/// The `ENVID` a worker sends each message with: `sluice.ID.MAC`, the MAC an HMAC of the id
/// under the outbox's secret, so that a report naming it is known to be about a message this
/// outbox sent, and which one.
enum EnvelopeToken {
    static func envelopeID(for id: Int64, key: Digest.HMACKey) -> String { "sluice.\(id).\(mac(id, key))" }

    /// What an `ENVID` says: not one of Sluice's, one whose MAC is wrong, or a message id.
    enum Reading: Equatable {
        case notOurs
        case forged
        case message(Int64)
    }

    static func read(_ envelopeID: String, key: Digest.HMACKey) -> Reading {
        let parts = envelopeID.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "sluice", let id = Int64(parts[1]) else { return .notOurs }
        guard Hex.constantTimeEqual(mac(id, key).utf8, parts[2].utf8) else { return .forged }
        return .message(id)
    }

    private static func mac(_ id: Int64, _ key: Digest.HMACKey) -> String {
        Hex.lowercase(key.mac("sluice.\(id)".utf8).prefix(10))
    }
}

/// A per-recipient return path (VERP): `LOCAL+ID-POSITION-MAC@DOMAIN`, the MAC an HMAC of the
/// message id and the recipient's position under the outbox's secret. A report delivered to it
/// names its recipient by itself, and nobody can make one for an address.
public struct VERP: Sendable, Hashable {
    /// The local part before the `+` (`bounces`).
    public var localPart: String
    /// The domain whose mail server receives the reports (`sluice sink --bounces`, say).
    public var domain: String

    /// A return path under `localPart@domain`.
    /// - Throws: ``OutboxError/Kind/invalidInput`` when `localPart@domain` is not an address.
    public init(localPart: String = "bounces", domain: String) throws(OutboxError) {
        guard !localPart.contains("+"), (try? EnvelopeAddress("\(localPart)@\(domain)")) != nil else {
            throw OutboxError(.invalidInput, "\(localPart)@\(domain) is not an address for VERP (no '+' in the local part)")
        }
        self.localPart = localPart
        self.domain = domain
    }

    func address(message id: Int64, position: Int, key: Digest.HMACKey) -> String {
        "\(localPart)+\(id)-\(position)-\(Self.mac(id, position, key))@\(domain)"
    }

    /// What an address says: not a VERP address of this form, a forged one, or a recipient.
    enum Reading: Equatable {
        case notOurs
        case forged
        case recipient(message: Int64, position: Int)
    }

    static func read(_ address: String, key: Digest.HMACKey) -> Reading {
        let local = address.split(separator: "@").first.map(String.init) ?? ""
        guard let plus = local.lastIndex(of: "+") else { return .notOurs }
        let parts = local[local.index(after: plus)...].split(separator: "-")
        guard parts.count == 3, let id = Int64(parts[0]), let position = Int(parts[1]) else { return .notOurs }
        guard Hex.constantTimeEqual(mac(id, position, key).utf8, parts[2].lowercased().utf8) else { return .forged }
        return .recipient(message: id, position: position)
    }

    private static func mac(_ id: Int64, _ position: Int, _ key: Digest.HMACKey) -> String {
        Hex.lowercase(key.mac("verp.\(id).\(position)".utf8).prefix(8))
    }
}

/// What ingesting one report did.
public struct ReportIngestion: Sendable, Hashable, CustomStringConvertible {
    /// One recipient the report changed.
    public struct Bounce: Sendable, Hashable {
        /// The outbox message.
        public var messageID: Int64
        /// The recipient.
        public var address: String
        /// The reported status (RFC 3463).
        public var status: String
        /// The class the status and the diagnostic give.
        public var bounceClass: BounceClass
        /// Whether the address joined the suppression list.
        public var suppressed: Bool
    }

    /// `bounce` for a delivery status notification, `complaint` for a feedback report.
    public var kind: String
    /// Recipients now bounced.
    public var bounced: [Bounce] = []
    /// Addresses added to the suppression list for a complaint.
    public var complaints: [String] = []
    /// What the report said that changed nothing, and why (a delay, a recipient already
    /// bounced, an address the message was not sent to).
    public var unchanged: [String] = []

    public var description: String {
        var parts: [String] = []
        if !bounced.isEmpty {
            parts.append("bounced " + bounced.map { "\($0.address) (message \($0.messageID), \($0.status), \($0.bounceClass)"
                + ($0.suppressed ? ", suppressed)" : ")") }.joined(separator: ", "))
        }
        if !complaints.isEmpty { parts.append("complaint, suppressed " + complaints.joined(separator: ", ")) }
        if !unchanged.isEmpty { parts.append("unchanged: " + unchanged.joined(separator: "; ")) }
        return parts.isEmpty ? "\(kind): nothing changed" : parts.joined(separator: "; ")
    }
}

extension Outbox {
    /// Reads a report that came back after a relay took a message (a delivery status
    /// notification, RFC 3464, or a complaint, RFC 5965) and records it: a recipient reported
    /// failed becomes ``RecipientState/bounced`` with the report's status, diagnostic and
    /// remote host, and joins the suppression list when its class is in `suppressOn` and the
    /// failure is permanent; a complainer joins it with the reason `complaint`.
    ///
    /// A report is matched to its message by the `ENVID` workers send (authenticated with the
    /// outbox's secret), else by the returned `Message-ID` and the recipient's address.
    ///
    /// - Throws: ``OutboxError/Kind/invalidInput`` for a message that is not a report, a
    ///   malformed one, one whose `ENVID` is Sluice's with a wrong MAC (forged), or one about
    ///   no message of this outbox; nothing is changed then.
    ///
    /// - Parameters:
    ///   - bytes: The report as it arrived: a whole RFC 5322 message.
    ///   - deliveredTo: The addresses the report was delivered to (its envelope recipients,
    ///     as a server knows them); with a VERP return path (``VERP``) they name the
    ///     recipient, authenticated, whatever the report says. Without them the report's
    ///     `Delivered-To`, `X-Original-To` and `To` are read.
    ///   - suppressOn: The bounce classes whose recipients join the suppression list.
    ///   - classifier: How a failed recipient's status and text become a bounce class.
    @discardableResult
    public func ingestReport(_ bytes: [UInt8], deliveredTo: [String] = [],
                             suppressOn: Set<BounceClass> = BounceClassifier.hardClasses,
                             classifier: BounceClassifier = .standard) async throws(OutboxError) -> ReportIngestion {
        let report: BounceReport
        do throws(BounceReportError) {
            report = try BounceReport(parsing: bytes)
        } catch {
            throw OutboxError(.invalidInput, "not a report Sluice reads: \(error.message)")
        }
        let now = clock.now()
        switch report {
        case .deliveryStatus(var dsn):
            if let (id, address) = try await verpRecipient(deliveredTo.isEmpty ? Self.deliveredTo(bytes) : deliveredTo) {
                // The return path names message and recipient: the report's own ENVID and
                // addresses give way to it (a forwarded address reports its final one).
                dsn.originalEnvelopeID = nil
                for index in dsn.recipients.indices {
                    dsn.recipients[index].originalRecipient = address
                    dsn.recipients[index].finalRecipient = address
                }
                return try await ingest(dsn, ids: [id], now: now, suppressOn: suppressOn, classifier: classifier)
            }
            return try await ingest(dsn, now: now, suppressOn: suppressOn, classifier: classifier)
        case .feedback(let feedback):
            return try await ingest(feedback, now: now)
        }
    }

    /// The messages a report may be about: the one its ENVID names, else those with its
    /// returned Message-ID.
    private func candidates(envelopeID: String?, messageID: String?) async throws(OutboxError) -> [Int64] {
        if let envelopeID {
            switch EnvelopeToken.read(envelopeID, key: Digest.HMACKey(.sha256, key: try await store.secret())) {
            case .message(let id): return [id]
            case .forged: throw OutboxError(.invalidInput, "the report's ENVID \(envelopeID) is not one this outbox made (forged); nothing was changed")
            case .notOurs: break
            }
        }
        guard let messageID, !messageID.isEmpty else {
            throw OutboxError(.invalidInput, "the report names no message of this outbox (no ENVID of its own, no Message-ID); nothing was changed")
        }
        let ids = try await store.messages(withMessageID: messageID)
        guard !ids.isEmpty else {
            throw OutboxError(.invalidInput, "the report is about \(messageID), which is no message of this outbox; nothing was changed")
        }
        return ids
    }

    /// The VERP address among `addresses`, read: the message and the recipient's address.
    /// - Throws: ``OutboxError/Kind/invalidInput`` for a VERP address with a wrong MAC.
    private func verpRecipient(_ addresses: [String]) async throws(OutboxError) -> (Int64, String)? {
        let candidates = addresses.filter { $0.contains("+") }
        guard !candidates.isEmpty else { return nil }
        let key = Digest.HMACKey(.sha256, key: try await store.secret())
        for address in candidates {
            switch VERP.read(address, key: key) {
            case .notOurs: continue
            case .forged: throw OutboxError(.invalidInput, "the return path \(address) is not one this outbox made (forged); nothing was changed")
            case .recipient(let id, let position):
                guard let record = try await store.message(id: id, now: clock.now()),
                      let recipient = record.recipients.first(where: { $0.position == position }) else {
                    throw OutboxError(.invalidInput, "the return path \(address) names no message of this outbox; nothing was changed")
                }
                return (id, recipient.address)
            }
        }
        return nil
    }

    /// The addresses a stored report was delivered to, from the headers MTAs add.
    static func deliveredTo(_ bytes: [UInt8]) -> [String] {
        guard let raw = try? RawMessage(bytes) else { return [] }
        return ["Delivered-To", "X-Original-To", "Envelope-To", "To"].flatMap(raw.headerValues)
            .flatMap(BounceReport.addresses(inHeaderValue:))
    }

    private func ingest(_ dsn: DeliveryStatusNotification, ids known: [Int64]? = nil, now: Date, suppressOn: Set<BounceClass>,
                        classifier: BounceClassifier) async throws(OutboxError) -> ReportIngestion {
        let ids: [Int64]
        if let known {
            ids = known
        } else {
            ids = try await candidates(envelopeID: dsn.originalEnvelopeID, messageID: dsn.originalMessageID)
        }
        var result = ReportIngestion(kind: "bounce")
        var records: [BounceRecord] = []
        var labels: [ReportIngestion.Bounce] = []
        var owners: [Int] = []  // for each record, the index of its label
        for recipient in dsn.recipients {
            guard recipient.action == .failed else {
                result.unchanged.append("\(recipient.address): \(recipient.action.rawValue)")
                continue
            }
            // The diagnostic's own reply code and text, when it is an SMTP reply.
            let diagnostic = recipient.diagnosticCode ?? ""
            let code = Int(diagnostic.prefix(3)).flatMap { (200...599).contains($0) ? $0 : nil } ?? 0
            let bounceClass = classifier.classify(code: code, enhancedCode: recipient.status, text: diagnostic)
            let permanent = recipient.status.statusClass == 5
            var reply = recipient.diagnosticCode ?? "reported \(recipient.status)"
            if let remote = recipient.remoteMTA { reply += " (\(remote))" }
            // The address as enqueued is ORCPT, as written or xtext-decoded; else the final one.
            var addresses: [String] = recipient.originalRecipient.map(DeliveryStatusNotification.xtextReadings) ?? []
            if !addresses.contains(where: { $0.lowercased() == recipient.finalRecipient.lowercased() }) {
                addresses.append(recipient.finalRecipient)
            }
            for id in ids {
                for address in addresses {
                    let entry = permanent && suppressOn.contains(bounceClass)
                        ? try? Suppression(target: address, reason: bounceClass.rawValue, detail: reply, createdAt: now)
                        : nil
                    records.append(BounceRecord(messageID: id, address: address, enhancedCode: "\(recipient.status)",
                                                reply: reply, bounceClass: bounceClass, suppress: entry))
                    owners.append(labels.count)
                }
                labels.append(.init(messageID: id, address: addresses[0], status: "\(recipient.status)",
                                    bounceClass: bounceClass,
                                    suppressed: permanent && suppressOn.contains(bounceClass)))
            }
        }
        let changed = try await store.recordBounces(records, now: now)
        var changedLabels = Set<Int>()
        for (owner, changed) in zip(owners, changed) where changed { changedLabels.insert(owner) }
        for (index, label) in labels.enumerated() {
            if changedLabels.contains(index) {
                result.bounced.append(label)
            } else {
                result.unchanged.append("\(label.address): not a delivered recipient of message \(label.messageID)")
            }
        }
        return result
    }

    private func ingest(_ feedback: FeedbackReport, now: Date) async throws(OutboxError) -> ReportIngestion {
        // A complaint must be about a message this outbox sent, to an address it sent it to:
        // otherwise anyone could put any address on the list.
        let ids = try await candidates(envelopeID: nil, messageID: feedback.originalMessageID)
        var result = ReportIngestion(kind: "complaint")
        guard feedback.feedbackType == "abuse" else {
            // fraud, virus, not-spam, auth-failure…: not a recipient asking for no more mail.
            result.unchanged.append("feedback type \(feedback.feedbackType): no address is suppressed for it")
            return result
        }
        var entries: [Suppression] = []
        for address in feedback.recipients {
            var sentTo = false
            for id in ids {
                if let record = try await store.message(id: id, now: now),
                   record.recipients.contains(where: { $0.address.lowercased() == address.lowercased() }) {
                    sentTo = true
                    break
                }
            }
            guard sentTo else {
                result.unchanged.append("\(address): not a recipient of \(feedback.originalMessageID ?? "the message")")
                continue
            }
            if let entry = try? Suppression(target: address, reason: Suppression.Reason.complaint,
                                            detail: "feedback report: \(feedback.feedbackType)", createdAt: now) {
                entries.append(entry)
                result.complaints.append(entry.target)
            }
        }
        if !entries.isEmpty { _ = try await store.suppress(entries) }
        return result
    }
}


