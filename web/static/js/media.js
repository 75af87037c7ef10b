// How the beneficiary's media leave the device on a poor link (issue 14): codec order, sender
// parameters (bitrate, frame rate, what to give up first), Opus with in-band FEC and DTX, and
// the low-data modes the volunteer chooses. Applied through RTCRtpSender.setParameters and
// setCodecPreferences, so no change ever renegotiates. Figures: bench/weak_media.py.

// The volunteer's low-data modes (data-channel message `data-mode`, signaling/PROTOCOL.md).
export const DATA_MODES = ["normal", "low", "audio"];

export function isDataMode(value) {
  return DATA_MODES.includes(value);
}

// Sender parameters per shared media and mode. Measured at 300 kbit/s (tbf, namespace): a
// screen keeps 1280 px at 5 fps well under 250 kbit/s, leaving room for both voices; text
// needs sharp frames far more than smooth motion, hence "maintain-resolution". A camera
// (often a phone filming a letter) may trade some resolution for motion ("balanced").
const VIDEO_PARAMETERS = {
  normal: {
    screen: { degradationPreference: "maintain-resolution", maxBitrate: 250_000, maxFramerate: 5 },
    camera: { degradationPreference: "balanced", maxBitrate: 300_000, maxFramerate: 15 },
  },
  // "Lower frame rate": still readable (same resolution), a frame every half second at most.
  low: {
    screen: { degradationPreference: "maintain-resolution", maxBitrate: 100_000, maxFramerate: 2 },
    camera: { degradationPreference: "maintain-resolution", maxBitrate: 100_000, maxFramerate: 2 },
  },
};

export function videoParameters(media, mode) {
  const table = VIDEO_PARAMETERS[mode] ?? VIDEO_PARAMETERS.normal;
  return table[media === "camera" ? "camera" : "screen"];
}

// Codec order for the video transceiver, fixed when it is created (before the offer). Screen
// text at 300 kbit/s (bench/weak_media.py, fake capture): AV1 needed ~23 kbit/s where VP9 took
// ~130 and VP8 ~150 for the same picture, with encode times alike (7–13 ms a frame); VP9 next,
// then VP8 and H.264 for browsers without them. A phone only films (no screen sharing): VP8
// and H.264 first, which phones encode cheaply (H.264 often in hardware).
const SCREEN_CODECS = ["video/av1", "video/vp9", "video/vp8", "video/h264"];
const PHONE_CODECS = ["video/vp8", "video/h264", "video/vp9", "video/av1"];

export function preferCodecs(transceiver, { mobile = false } = {}) {
  const capabilities = globalThis.RTCRtpSender?.getCapabilities?.("video");
  if (!capabilities || typeof transceiver.setCodecPreferences !== "function") return;
  const order = mobile ? PHONE_CODECS : SCREEN_CODECS;
  const rank = (codec) => {
    const i = order.indexOf(codec.mimeType.toLowerCase());
    return i < 0 ? order.length : i; // rtx, red, ulpfec keep their place after the codecs
  };
  const codecs = [...capabilities.codecs].sort((a, b) => rank(a) - rank(b));
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (err) {
    console.debug("codec preferences refused", err);
  }
}

// setParameters needs the getParameters of the same turn and refuses overlapping calls: one
// chain per sender.
const chains = new WeakMap();

function update(sender, change) {
  const task = (chains.get(sender) ?? Promise.resolve()).then(async () => {
    const parameters = sender.getParameters();
    if (!parameters.encodings?.length) return; // not negotiated yet: applied again after
    change(parameters);
    await sender.setParameters(parameters);
  }).catch((err) => console.debug("sender parameters unchanged", err));
  chains.set(sender, task);
  return task;
}

// The video sender's parameters for what it sends now (`media`: "screen" or "camera").
export function tuneVideoSender(sender, media, mode) {
  const { degradationPreference, maxBitrate, maxFramerate } = videoParameters(media, mode);
  return update(sender, (parameters) => {
    parameters.degradationPreference = degradationPreference;
    for (const encoding of parameters.encodings) {
      encoding.maxBitrate = maxBitrate;
      encoding.maxFramerate = maxFramerate;
      encoding.scaleResolutionDownBy = 1;
    }
  });
}

// Voice goes first when the link is short: the network (DSCP) and the local queue.
export function tuneAudioSender(sender) {
  return update(sender, (parameters) => {
    for (const encoding of parameters.encodings) {
      encoding.priority = "high";
      encoding.networkPriority = "high";
    }
  });
}

// Opus with in-band FEC (a lost packet rebuilt from the next one) and DTX (almost nothing sent
// during silence). Set in OUR description: it tells the REMOTE sender what to do, so both
// sides call it on the descriptions they set locally.
export function withOpusFecDtx(description) {
  const { type, sdp } = description;
  if (typeof sdp !== "string") return description;
  const payloads = [...sdp.matchAll(/^a=rtpmap:(\d+) opus\/48000/gim)].map((match) => match[1]);
  let result = sdp;
  for (const pt of payloads) {
    const fmtp = new RegExp(`^a=fmtp:${pt} ([^\\r\\n]*)`, "m");
    if (fmtp.test(result)) {
      result = result.replace(fmtp, (_line, params) => {
        const kept = params.split(";").map((p) => p.trim())
          .filter((p) => p && !/^(useinbandfec|usedtx)=/i.test(p));
        return `a=fmtp:${pt} ${[...kept, "useinbandfec=1", "usedtx=1"].join(";")}`;
      });
    } else {
      result = result.replace(new RegExp(`^(a=rtpmap:${pt} opus/48000[^\\r\\n]*)`, "mi"),
        `$1\r\na=fmtp:${pt} useinbandfec=1;usedtx=1`);
    }
  }
  return { type, sdp: result };
}
