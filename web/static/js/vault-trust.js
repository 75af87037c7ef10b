// Naming a personne de confiance (loaded when offered): the vault key K is encrypted here for
// their public key (RSA-OAEP), with a label only they can read. Right after the creation K is
// still in memory; later the person types the recovery code again, like a password change.
import { $, on, show } from "./common.js";

export function setup(app) {
  const { core, urls, t, go, setError, setText, announce } = app;
  let K = null;
  let trustee = null;
  let code = "";
  let done = () => app.openSettings();

  function reset(needCode) {
    trustee = null;
    code = "";
    $("trustee-code-form").reset();
    $("trustee-confirm-form").reset();
    show($("trustee-recovery-row"), needCode);
    $("trustee-recovery").required = needCode;
    show($("trustee-code-form"), true);
    show($("trustee-confirm-form"), false);
    setError("trustee-error", null);
    go("trustee");
  }

  // Right after the creation: K is at hand.
  function offer(key, then) {
    K = key;
    done = then;
    reset(false);
  }

  // From the settings: the recovery code is asked again.
  function later() {
    K = null;
    done = () => app.openSettings();
    reset(true);
  }

  function finish() {
    K = null;
    trustee = null;
    done();
  }

  on($("trustee-code-form"), "submit", async (event) => {
    event.preventDefault();
    const button = $("trustee-find");
    button.disabled = true;
    setError("trustee-error", null);
    try {
      if (!K) {
        const key = await core.openWithCode(urls, $("trustee-recovery").value);
        if (!(await core.sameVault(app.client.device, key))) throw new core.VaultError("wrong_vault");
        K = key;
        show($("trustee-recovery-row"), false);
        $("trustee-recovery").required = false;
        $("trustee-recovery").value = "";
      }
      code = $("trustee-code").value;
      trustee = await app.client.trusteeKey(code);
      setText("trustee-name", trustee.name);
      setText("trustee-association", trustee.association ?? "");
      show($("trustee-code-form"), false);
      show($("trustee-confirm-form"), true);
      $("trustee-label").focus();
    } catch (err) {
      setError("trustee-error", err);
    } finally {
      button.disabled = false;
    }
  });

  on($("trustee-confirm-form"), "submit", async (event) => {
    event.preventDefault();
    const button = $("trustee-give");
    button.disabled = true;
    setError("trustee-error", null);
    try {
      await app.client.addTrustee(K, code, trustee, $("trustee-label").value);
      const name = trustee.name;
      finish();
      announce(t("trustee_added", { name }));
    } catch (err) {
      setError("trustee-error", err);
      show($("trustee-error"), true);
    } finally {
      button.disabled = false;
    }
  });

  on($("trustee-skip"), "click", finish);

  return { offer, later };
}
