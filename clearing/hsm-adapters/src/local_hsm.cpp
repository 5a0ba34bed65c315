// The HSM's services in process (hsm_adapters.hpp LocalHsm).
#include <coconut/clearing/hsm_adapters.hpp>

#include <coconut/core/assert.hpp>

#include <span>

namespace coconut::clearing {

LocalHsm::LocalHsm(std::shared_ptr<const hsm::Hsm> hsm, std::string tac_master_label)
    : hsm_(std::move(hsm)), label_(std::move(tac_master_label)) {
    COCONUT_ASSERT(hsm_ != nullptr);
}

void LocalHsm::verify(const hsm::PurchaseTac& transaction, Handler handler) {
    auto verdicts = hsm_->verify_purchase_tacs(label_, std::span<const hsm::PurchaseTac>(&transaction, 1));
    if (!verdicts) return handler(Unexpected<hsm::Failure>{verdicts.error()});
    COCONUT_ASSERT(verdicts->size() == 1, "one verdict per TAC");
    handler((*verdicts)[0]);
}

void LocalHsm::load_mac2(const hsm::LoadRequest& request, LoadHandler handler) { handler(hsm_->load_mac2(request)); }
void LocalHsm::verify_load_tac(const hsm::LoadTac& load, VerdictHandler handler) { handler(hsm_->verify_load_tac(load)); }
void LocalHsm::verify_internal_auth(const hsm::InternalAuth& auth, VerdictHandler handler) { handler(hsm_->verify_internal_auth(auth)); }

}  // namespace coconut::clearing
