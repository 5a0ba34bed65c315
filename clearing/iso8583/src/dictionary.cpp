// The ISO 8583:1987 data-element dictionary (ISO 8583:1987 §4.3; same sizes as jPOS iso87binary.xml
// with ASCII data elements) and Coconut's profile of it. Table reproduced in clearing/ISO8583.md.
#include <coconut/iso8583/iso8583.hpp>

#include <initializer_list>

namespace coconut::iso8583 {
namespace {

struct Row {
    int field;
    Format format;
    LengthKind length_kind;
    std::uint16_t length_max;
    std::string_view name;
};

constexpr auto F = LengthKind::fixed;
constexpr auto LL = LengthKind::llvar;
constexpr auto LLL = LengthKind::lllvar;
using enum Format;

// Field 1 (secondary bitmap) and 65 (tertiary bitmap indicator) are bitmap bits, not data elements.
constexpr Row iso87_rows[] = {
    {2, n, LL, 19, "primary account number"},
    {3, n, F, 6, "processing code"},
    {4, n, F, 12, "amount, transaction"},
    {5, n, F, 12, "amount, settlement"},
    {6, n, F, 12, "amount, cardholder billing"},
    {7, n, F, 10, "transmission date and time (MMDDhhmmss)"},
    {8, n, F, 8, "amount, cardholder billing fee"},
    {9, n, F, 8, "conversion rate, settlement"},
    {10, n, F, 8, "conversion rate, cardholder billing"},
    {11, n, F, 6, "system trace audit number"},
    {12, n, F, 6, "time, local transaction (hhmmss)"},
    {13, n, F, 4, "date, local transaction (MMDD)"},
    {14, n, F, 4, "date, expiration (YYMM)"},
    {15, n, F, 4, "date, settlement (MMDD)"},
    {16, n, F, 4, "date, conversion"},
    {17, n, F, 4, "date, capture"},
    {18, n, F, 4, "merchant type"},
    {19, n, F, 3, "acquiring institution country code"},
    {20, n, F, 3, "PAN extended, country code"},
    {21, n, F, 3, "forwarding institution country code"},
    {22, n, F, 3, "point of service entry mode"},
    {23, n, F, 3, "card sequence number"},
    {24, n, F, 3, "network international identifier"},
    {25, n, F, 2, "point of service condition code"},
    {26, n, F, 2, "point of service PIN capture code"},
    {27, n, F, 1, "authorization identification response length"},
    {28, xn, F, 9, "amount, transaction fee"},
    {29, xn, F, 9, "amount, settlement fee"},
    {30, xn, F, 9, "amount, transaction processing fee"},
    {31, xn, F, 9, "amount, settlement processing fee"},
    {32, n, LL, 11, "acquiring institution identification code"},
    {33, n, LL, 11, "forwarding institution identification code"},
    {34, ans, LL, 28, "primary account number, extended"},
    {35, z, LL, 37, "track 2 data"},
    {36, n, LLL, 104, "track 3 data"},
    {37, an, F, 12, "retrieval reference number"},
    {38, an, F, 6, "authorization identification response"},
    {39, an, F, 2, "response code"},
    {40, an, F, 3, "service restriction code"},
    {41, ans, F, 8, "card acceptor terminal identification"},
    {42, ans, F, 15, "card acceptor identification code"},
    {43, ans, F, 40, "card acceptor name/location"},
    {44, an, LL, 25, "additional response data"},
    {45, an, LL, 76, "track 1 data"},
    {46, an, LLL, 999, "additional data - ISO"},
    {47, an, LLL, 999, "additional data - national"},
    {48, an, LLL, 999, "additional data - private"},
    {49, an, F, 3, "currency code, transaction"},
    {50, an, F, 3, "currency code, settlement"},
    {51, an, F, 3, "currency code, cardholder billing"},
    {52, b, F, 8, "personal identification number data"},
    {53, n, F, 16, "security related control information"},
    {54, an, LLL, 120, "additional amounts"},
    {55, ans, LLL, 999, "reserved ISO"},
    {56, ans, LLL, 999, "reserved ISO"},
    {57, ans, LLL, 999, "reserved national"},
    {58, ans, LLL, 999, "reserved national"},
    {59, ans, LLL, 999, "reserved national"},
    {60, ans, LLL, 999, "reserved national"},
    {61, ans, LLL, 999, "reserved private"},
    {62, ans, LLL, 999, "reserved private"},
    {63, ans, LLL, 999, "reserved private"},
    {64, b, F, 8, "message authentication code"},
    {66, n, F, 1, "settlement code"},
    {67, n, F, 2, "extended payment code"},
    {68, n, F, 3, "receiving institution country code"},
    {69, n, F, 3, "settlement institution country code"},
    {70, n, F, 3, "network management information code"},
    {71, n, F, 4, "message number"},
    {72, n, F, 4, "message number, last"},
    {73, n, F, 6, "date, action (YYMMDD)"},
    {74, n, F, 10, "credits, number"},
    {75, n, F, 10, "credits, reversal number"},
    {76, n, F, 10, "debits, number"},
    {77, n, F, 10, "debits, reversal number"},
    {78, n, F, 10, "transfer, number"},
    {79, n, F, 10, "transfer, reversal number"},
    {80, n, F, 10, "inquiries, number"},
    {81, n, F, 10, "authorizations, number"},
    {82, n, F, 12, "credits, processing fee amount"},
    {83, n, F, 12, "credits, transaction fee amount"},
    {84, n, F, 12, "debits, processing fee amount"},
    {85, n, F, 12, "debits, transaction fee amount"},
    {86, n, F, 16, "credits, amount"},
    {87, n, F, 16, "credits, reversal amount"},
    {88, n, F, 16, "debits, amount"},
    {89, n, F, 16, "debits, reversal amount"},
    {90, n, F, 42, "original data elements"},
    {91, an, F, 1, "file update code"},
    {92, an, F, 2, "file security code"},
    {93, an, F, 5, "response indicator"},
    {94, an, F, 7, "service indicator"},
    {95, an, F, 42, "replacement amounts"},
    {96, b, F, 8, "message security code"},
    {97, xn, F, 17, "amount, net settlement"},
    {98, ans, F, 25, "payee"},
    {99, n, LL, 11, "settlement institution identification code"},
    {100, n, LL, 11, "receiving institution identification code"},
    {101, ans, LL, 17, "file name"},
    {102, ans, LL, 28, "account identification 1"},
    {103, ans, LL, 28, "account identification 2"},
    {104, ans, LLL, 100, "transaction description"},
    {105, ans, LLL, 999, "reserved ISO"},
    {106, ans, LLL, 999, "reserved ISO"},
    {107, ans, LLL, 999, "reserved ISO"},
    {108, ans, LLL, 999, "reserved ISO"},
    {109, ans, LLL, 999, "reserved ISO"},
    {110, ans, LLL, 999, "reserved ISO"},
    {111, ans, LLL, 999, "reserved ISO"},
    {112, ans, LLL, 999, "reserved national"},
    {113, ans, LLL, 999, "reserved national"},
    {114, ans, LLL, 999, "reserved national"},
    {115, ans, LLL, 999, "reserved national"},
    {116, ans, LLL, 999, "reserved national"},
    {117, ans, LLL, 999, "reserved national"},
    {118, ans, LLL, 999, "reserved national"},
    {119, ans, LLL, 999, "reserved national"},
    {120, ans, LLL, 999, "reserved private"},
    {121, ans, LLL, 999, "reserved private"},
    {122, ans, LLL, 999, "reserved private"},
    {123, ans, LLL, 999, "reserved private"},
    {124, ans, LLL, 999, "reserved private"},
    {125, ans, LLL, 999, "reserved private"},
    {126, ans, LLL, 999, "reserved private"},
    {127, ans, LLL, 999, "reserved private"},
    {128, b, F, 8, "message authentication code"},
};

// The fields of Coconut's terminal ⇄ clearing profile (clearing/ISO8583.md §3).
constexpr int coconut_fields[] = {2,  3,  4,  7,  11, 12, 13, 15, 25, 32, 37, 38, 39, 41, 42, 48, 49, 54,
                                  60, 62, 63, 64, 70, 74, 75, 76, 77, 86, 87, 88, 89, 90, 95, 97, 128};

Dictionary build_iso87() {
    Dictionary dictionary{};
    for (const Row& row : iso87_rows) {
        dictionary[static_cast<std::size_t>(row.field)] = {row.format, row.length_kind, row.length_max, row.name};
    }
    return dictionary;
}

Dictionary build_coconut() {
    const Dictionary& full = iso87_dictionary();
    Dictionary dictionary{};
    for (int field : coconut_fields) dictionary[static_cast<std::size_t>(field)] = full[static_cast<std::size_t>(field)];
    return dictionary;
}

}  // namespace

const Dictionary& iso87_dictionary() {
    static const Dictionary dictionary = build_iso87();
    return dictionary;
}

const Dictionary& coconut_dictionary() {
    static const Dictionary dictionary = build_coconut();
    return dictionary;
}

}  // namespace coconut::iso8583
