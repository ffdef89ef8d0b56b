/* Slim (slide microscopy viewer) runtime config for the dicomnode demo stack.
 *
 * Mounted over /var/www/html/config/default.js of the Slim image (docker/compose.yaml,
 * service "slim"); Slim's index.html loads it before the app. One DICOMweb server: the
 * demo Orthanc, proxied on Slim's own origin at /dicomweb (docker/slim/slim.conf), so the
 * browser talks to one origin and Orthanc needs no CORS. Read-only (write: false): the
 * demo does not store annotations back.
 *
 * The annotation style below is for the node's deposit outlines (TID 1500 SR, finding
 * "Neoplasm, Secondary" SCT 14799000 in category "Morphologically abnormal structure");
 * the SEG's segments (tumour mask, three heatmap bands) appear in Slim's segmentation panel.
 */
window.config = {
  path: '/',
  servers: [
    {
      id: 'orthanc',
      url: window.location.origin + '/dicomweb',
      write: false,
    },
  ],
  disableWorklist: false,
  disableAnnotationTools: true,
  mode: 'dark',
  preload: true,
  annotations: [
    {
      finding: { value: '14799000', schemeDesignator: 'SCT', meaning: 'Neoplasm, Secondary' },
      findingCategory: { value: '49755003', schemeDesignator: 'SCT', meaning: 'Morphologically abnormal structure' },
      geometryTypes: ['polygon'],
      style: {
        stroke: { color: [0, 255, 0, 1], width: 3 },
        fill: { color: [0, 255, 0, 0.1] },
      },
    },
  ],
};
