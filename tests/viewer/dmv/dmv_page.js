// Functions the slide check calls in the page (tests/viewer/microscopy_check.cjs), all
// through dicom-microscopy-viewer's own API: open a slide series, add our SEG's segments
// and our SR's regions, show one overlay at a time, and map known slide positions to
// viewport pixels. Nothing here decides pass/fail: tests/viewer/test_microscopy.py does.
'use strict';
(() => {
  const dmv = window.dicomMicroscopyViewer;
  const state = { errors: [], frames: { started: 0, ended: 0, failed: 0 } };
  // the viewer publishes (bubbling) events per tile frame it fetches: started, then ended
  // (also after an error, which is published as well); the driver waits for none pending
  const count = (key) => () => { state.frames[key] += 1; };
  document.addEventListener(dmv.events.FRAME_LOADING_STARTED, count('started'));
  document.addEventListener(dmv.events.FRAME_LOADING_ENDED, count('ended'));
  document.addEventListener(dmv.events.FRAME_LOADING_ERROR, count('failed'));

  function client() {
    return new window.DICOMwebClient.api.DICOMwebClient({ url: `${location.origin}/dicom-web` });
  }

  function series(study, uid) {
    return state.client.retrieveSeriesMetadata({ studyInstanceUID: study, seriesInstanceUID: uid });
  }

  // Ask OpenLayers to draw; the driver waits until the viewport stops changing (OpenLayers'
  // 'rendercomplete' never fired here: the viewer keeps a layer busy).
  function redraw() {
    state.viewer.getMap().render();
    return true;
  }

  function code(seq) {
    const item = Array.isArray(seq) ? seq[0] : seq;
    return item ? { value: item.CodeValue, meaning: item.CodeMeaning, scheme: item.CodingSchemeDesignator } : null;
  }

  // The measurement groups of a TID 1500 SR that carry a SCOORD3D region: one ROI each.
  function srRegions(sr) {
    const regions = [];
    const walk = (items, group) => {
      for (const item of items || []) {
        const name = code(item.ConceptNameCodeSequence);
        if (item.ValueType === 'CONTAINER' && name && name.value === '125007') {
          const g = { tracking: null, trackingUID: null, measurements: [], evaluations: [], scoord: null };
          walk(item.ContentSequence, g);
          if (g.scoord) regions.push(g);
        } else if (item.ValueType === 'CONTAINER') {
          walk(item.ContentSequence, group);
        } else if (group) {
          if (name && name.value === '112039') group.tracking = item.TextValue;
          else if (name && name.value === '112040') group.trackingUID = item.UID;
          else if (item.ValueType === 'NUM') group.measurements.push(item);
          else if (item.ValueType === 'CODE') group.evaluations.push(item);
          else if (item.ValueType === 'SCOORD3D') group.scoord = item;
        }
      }
    };
    walk(sr.ContentSequence, null);
    return regions;
  }

  // What Slim (src/components/SlideViewer/utils/viewerUtils.ts, utils/measurementReport.ts)
  // requires before it shows an SR's regions at all; each unmet requirement as a reason.
  function slimRejects(sr) {
    const reasons = [];
    const tid = (sr.ContentTemplateSequence || [])[0];
    if (!tid || tid.TemplateIdentifier !== '1500') reasons.push('not TID 1500');
    const top = sr.ContentSequence || [];
    const find = (items, value) => items.find((it) => code(it.ConceptNameCodeSequence).value === value);
    const subject = find(top, '121024');
    if (!subject || code(subject.ConceptCodeSequence).value !== '121027') reasons.push('no Subject Class "Specimen"');
    for (const [value, name] of [['121039', 'Specimen UID'], ['121041', 'Specimen Identifier'],
      ['111700', 'Specimen Container Identifier']]) {
      if (!find(top, value)) reasons.push(`no ${name}`);
    }
    const regions = srRegions(sr);
    if (regions.length === 0) reasons.push('no measurement group with a SCOORD3D Image Region');
    regions.filter((g) => !g.trackingUID).forEach(() => reasons.push('a region group without Tracking UID'));
    return reasons;
  }

  function inverse3(m) {
    const [[a, b, c], [d, e, f], [g, h, i]] = m;
    const A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
    const det = a * A + b * B + c * C;
    return [
      [A / det, -(b * i - c * h) / det, (b * f - c * e) / det],
      [B / det, (a * i - c * g) / det, -(a * f - c * d) / det],
      [C / det, -(a * h - b * g) / det, (a * e - b * d) / det],
    ];
  }

  function scoord3d(item) {
    const data = Array.from(item.GraphicData, Number);
    const coordinates = [];
    for (let i = 0; i < data.length; i += 3) coordinates.push([data[i], data[i + 1], data[i + 2]]);
    const frameOfReferenceUID = item.ReferencedFrameOfReferenceUID;
    const kinds = { POLYGON: dmv.scoord3d.Polygon, POLYLINE: dmv.scoord3d.Polyline, POINT: dmv.scoord3d.Point };
    const Kind = kinds[item.GraphicType];
    if (!Kind) throw new Error(`graphic type ${item.GraphicType} not handled by the check page`);
    return new Kind({ coordinates: item.GraphicType === 'POINT' ? coordinates[0] : coordinates, frameOfReferenceUID });
  }

  window.dmvCheck = {
    state,
    async openSlide(spec) {
      state.client = client();
      const raw = await series(spec.study, spec.slide_series);
      const images = raw.map((m) => new dmv.metadata.VLWholeSlideMicroscopyImage({ metadata: m }))
        .filter((im) => ['VOLUME', 'THUMBNAIL'].includes(im.ImageType[2]));
      const errorInterceptor = (error) => { state.errors.push(String(error && error.message ? error.message : error)); return error; };
      state.images = images;
      state.slimRejects = [];
      state.viewer = new dmv.viewer.VolumeImageViewer({ client: state.client, metadata: images, errorInterceptor });
      state.viewer.render({ container: document.getElementById('viewport') });
      return { images: images.length, levels: state.viewer.numLevels, frameOfReferenceUID: state.viewer.frameOfReferenceUID };
    },
    async addSeg(spec) {
      const raw = await series(spec.study, spec.seg_series);
      const segs = raw.map((m) => new dmv.metadata.Segmentation({ metadata: m }));
      // Slim (SlideViewer/utils/derivedDataset.ts) adds a SEG only on the same slide:
      // same Frame of Reference and Container Identifier as the slide's images
      const slide = state.images[0];
      for (const seg of segs) {
        for (const key of ['FrameOfReferenceUID', 'ContainerIdentifier']) {
          if (seg[key] !== slide[key]) state.slimRejects.push(`SEG ${key} ${seg[key]} is not the slide's ${slide[key]}`);
        }
      }
      state.viewer.addSegments(segs);
      return state.viewer.getAllSegments().map((s) => ({ uid: s.uid, number: s.number, label: s.label }));
    },
    async addSr(spec) {
      const raw = await series(spec.study, spec.sr_series);
      const out = [];
      for (const m of raw) {
        const sr = new dmv.metadata.Comprehensive3DSR({ metadata: m });
        state.slimRejects.push(...slimRejects(sr));
        for (const g of srRegions(sr)) {
          const roi = new dmv.roi.ROI({
            scoord3d: scoord3d(g.scoord),
            uid: g.trackingUID || undefined,
            properties: { label: g.tracking, measurements: g.measurements, evaluations: g.evaluations },
          });
          state.viewer.addROI(roi, { stroke: { color: [0, 255, 0, 1], width: 3 } });
        }
      }
      state.viewer.hideROIs();
      // what the viewer now holds, read back through its own API
      for (const roi of state.viewer.getAllROIs()) {
        const ident = (roi.properties.evaluations || []).find((e) => code(e.ConceptNameCodeSequence).value === '112039');
        out.push({
          uid: roi.uid,
          label: roi.properties.label || (ident && ident.TextValue),
          graphicType: roi.scoord3d.graphicType,
          points: roi.scoord3d.graphicData.length,
          measurements: (roi.properties.measurements || []).map((m) => ({
            name: code(m.ConceptNameCodeSequence), value: Number(m.MeasuredValueSequence[0].NumericValue),
            unit: code(m.MeasuredValueSequence[0].MeasurementUnitsCodeSequence) })),
          evaluations: (roi.properties.evaluations || []).map((e) => ({
            name: code(e.ConceptNameCodeSequence), value: code(e.ConceptCodeSequence), text: e.TextValue })),
        });
      }
      return out;
    },
    async show(what) {
      // what: {segment: uid} | {rois: true} | {} (the slide alone)
      const v = state.viewer;
      for (const s of v.getAllSegments()) if (v.isSegmentVisible(s.uid)) v.hideSegment(s.uid);
      if (v.areROIsVisible) v.hideROIs();
      if (what.segment) v.showSegment(what.segment, { opacity: 1 });
      if (what.rois) v.showROIs();
      return redraw();
    },
    // level-0 total-pixel-matrix (column, row) → viewport CSS pixels
    pixelsFromMatrix(points) {
      const map = state.viewer.getMap();
      return points.map(([c, r]) => map.getPixelFromCoordinate([c, -(r + 1)]));
    },
    // slide coordinates (mm) → viewport CSS pixels, as the viewer maps ROIs (its
    // applyInverseTransform takes the inverse of the viewer's pixel → slide affine)
    pixelsFromSlide(points) {
      const map = state.viewer.getMap();
      const affine = inverse3(state.viewer.getAffine());
      return points.map(([x, y]) => {
        const [c, r] = dmv.utils.applyInverseTransform({ coordinate: [x, y], affine });
        return map.getPixelFromCoordinate([c, -(r + 1)]);
      });
    },
  };
})();
