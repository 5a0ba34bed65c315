// camt.053.001.08 statements and camt.054.001.08 notifications as the bank would send them for the
// settlement accounts: one booked debit entry per credit transfer, with the bank's reference
// (AcctSvcrRef) and the EndToEndId of the pain.001.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <vector>

namespace settle_test {

struct BankEntry {
    std::string end_to_end_id;
    std::string amount;  // "8.31"
    std::string bank_reference;
};

inline std::string camt_entries(const std::vector<BankEntry>& entries) {
    std::string x;
    for (const auto& e : entries) {
        x += fmt::format(R"(      <Ntry>
        <Amt Ccy="CNY">{0}</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2026-03-11</Dt></BookgDt>
        <AcctSvcrRef>{1}</AcctSvcrRef>
        <BkTxCd><Prtry><Cd>TRF</Cd></Prtry></BkTxCd>
        <NtryDtls>
          <TxDtls>
            <Refs><EndToEndId>{2}</EndToEndId></Refs>
            <Amt Ccy="CNY">{0}</Amt>
          </TxDtls>
        </NtryDtls>
      </Ntry>
)",
                         e.amount, e.bank_reference, e.end_to_end_id);
    }
    return x;
}

// A bank-to-customer document: `root` (BkToCstmrStmt / BkToCstmrDbtCdtNtfctn) with one `report`
// (Stmt / Ntfctn) for `account`; `balance` is the closing balance a statement must carry.
inline std::string camt_document(std::string_view version, std::string_view root, std::string_view report, std::string_view account,
                                 std::string_view balance, const std::vector<BankEntry>& entries) {
    return fmt::format(R"(<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:{0}">
  <{1}>
    <GrpHdr><MsgId>MSG-{0}</MsgId><CreDtTm>2026-03-11T18:00:00+08:00</CreDtTm></GrpHdr>
    <{2}>
      <Id>{2}-20260311-1</Id>
      <Acct><Id><Othr><Id>{3}</Id></Othr></Id></Acct>
{4}{5}    </{2}>
  </{1}>
</Document>
)",
                       version, root, report, account, balance, camt_entries(entries));
}

inline std::string camt053(const std::vector<BankEntry>& entries) {
    constexpr std::string_view closing_balance = R"(      <Bal>
        <Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp>
        <Amt Ccy="CNY">1000000.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Dt><Dt>2026-03-11</Dt></Dt>
      </Bal>
)";
    return camt_document("camt.053.001.08", "BkToCstmrStmt", "Stmt", "FLOAT0001", closing_balance, entries);
}

inline std::string camt054(const std::vector<BankEntry>& entries) {
    return camt_document("camt.054.001.08", "BkToCstmrDbtCdtNtfctn", "Ntfctn", "FUND0001", "", entries);
}

}  // namespace settle_test
